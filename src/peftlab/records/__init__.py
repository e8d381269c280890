"""Model records: what validate, params and a study's dry-run need of a model, built once on the meta
device and kept as JSON in peftlab's cache, so that a warm answer imports no torch, timm, transformers or
PEFT. store (the files: keys, checksums, listing), answers (the checks, counts, memory estimate and FLOPs
read from them, built by the live code where absent)."""
