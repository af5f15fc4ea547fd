"""The catalog's rules: what a model, a tag and a link may be, and how a hashed file,
a caller's record or a person's change is written, each inside a caller's transaction
(``settle``, ``crud``, ``tags``, ``values``) or as one transaction (``curation``)."""
