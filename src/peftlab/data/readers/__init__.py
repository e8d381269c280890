"""The readers of dataset file formats: what they return (records), binary formats (binary), image folders
(folders), file lists, VTAB-1k and FGVC (lists) and the numpy-only unpickler (safe_pickle).
"""
