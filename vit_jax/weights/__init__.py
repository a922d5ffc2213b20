"""Weights in and out: every checkpoint a ViT user holds, read into one canonical tree.

  trained_model    load any checkpoint (a workdir, a released .npz, a timm or Hugging Face file)
                   as (model, parameters, input transform, labels)
  workdir_params   the parameters (EMA when kept) of one of our runs' orbax checkpoints
  dense_run        a dense (segmentation, depth) run's workdir as its model and parameters
  architecture     a model config read off a parameter tree's shapes
  foreign          timm and Hugging Face files: configs read, names mapped, refusals named
  timm_config, timm_archs     timm's config.json and its architecture table
  hf_names, timm_names, torch_names   PyTorch parameter names <-> ours
  transforms       the input transform a checkpoint was trained with, as a pp string
The released `.npz` format is `vit_jax.checkpoint` (the official module's API); exports are
`vit_jax.export`; the train state's orbax checkpoints are `vit_jax.train.checkpointer`.
"""
