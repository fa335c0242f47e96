"""Pipeline stages. Each ``tasks/<stage>.py`` has ``run_<stage>(params, paths)``, a Prefect task
wrapper (in ``flows/``) and a ``main()`` that ``dvc.yaml`` calls as ``python -m tasks.<stage>``."""
