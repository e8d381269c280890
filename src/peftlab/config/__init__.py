"""A run's configuration: the typed sections (sections, with the shared checks in checks), RunConfig and run ids
(schema), the registry of method sections that the methods fill (methods), YAML reading (reading), paths in
configs (paths), protocol presets (protocol), the benchmark suites a config may name (suites) and the generated
key reference (reference), and what a study's or plugin's text may hand TeX (tex: safe_math, bibtex_entry).
Reading a config imports no torch.
"""
