"""The study store: a grid of trials at the base width (sweep), refined near each optimum (refine), its best
setting carried to larger widths (transfer), each trial's results in its own folder.

A study is a folder::

    study.yaml      what the study is: name, the overrides it was made with, the hash of its base config, the
                    token that says which user's muso made it (trust.py)
    trials.jsonl    the numbered trial list, append-only: index, id, phase (sweep | refine | transfer | verify),
                    param, width, lr, damping, seed and the trial's full resolved config (self-contained:
                    `muso run-trial <study> <i>` and a plain `sbatch --array` need nothing else)
    trials/<id>/    one folder per trial: config.yaml, metrics.jsonl, result.json (muso_cli.track)
    transfer.json   the settings chosen for transfer, per parameterization, with the trials they came from

One job per module:

- :mod:`.trials`: a trial's identity (its id is a hash of the resolved config that decides its numbers);
- :mod:`.store`: the locked folder (study.yaml, the index, transfer.json) and :mod:`.claims`, one process per trial;
- :mod:`.spec`: a study's keys (``study.*``) parsed once into a :class:`~.spec.StudySpec`;
- :mod:`.plan`: the trials of a sweep, a refinement round and a transfer, and the choice of the best setting;
- :mod:`.results`: the results reader and its trust rules (what the verdict and the report read);
- :mod:`.trust`: whether a study was made here, and what of it may run without ``--trust``.
"""
