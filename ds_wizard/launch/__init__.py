"""The launch side: preparing a run (``plan``), its command (``command``) and supervising
its processes (``supervisor``). No torch here; the ranks (``ds_wizard.train``) never import
this package — they read the decision from ``run.json`` (``core.runspec``)."""
