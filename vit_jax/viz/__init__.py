"""Looking inside a ViT: attention maps, rollout, attention distance, posemb and filter figures."""
