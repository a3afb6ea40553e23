"""The annotation web tool (ANNOTATION.md §6): study store, FastAPI app, HGGT-format export.

Modules: ``db`` (SQLite store, append-only events), ``study`` (study setup and assignment),
``app`` (HTTP API and static page), ``export`` (HGGT release JSON tree + long table),
``stats`` (control accuracy, test–retest), ``cli`` (``hggt annotate …``). The web framework is
imported only inside this package (STYLE rule 5).
"""
