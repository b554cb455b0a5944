"""FID-scale sampling: the job and its batches (sampling), its files (files), its processes (distributed)."""
