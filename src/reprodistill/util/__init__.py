"""Small services every layer uses: atomic files and checkpoints, folder locks, progress reporting."""
