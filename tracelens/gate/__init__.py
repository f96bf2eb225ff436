"""The CI gate (``tracelens gate``, docs/gate.md): a policy (:mod:`.policy`) and a baseline (:mod:`.baseline`)
applied to the findings of each capture by :mod:`.evaluate`, the only module that decides the exit code, and views
of its result for people and CI systems: :mod:`.summary` (text), :mod:`.jsonl`, :mod:`.sarif`, :mod:`.junit` and
:mod:`.github` (annotations and step summary)."""
