"""Foreign weight layouts, read and written: the PyTorch role table, timm, Hugging Face files."""
