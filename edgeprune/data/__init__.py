"""Field images: reading a folder of images safely, labels, the seeded prune/fine-tune split."""
