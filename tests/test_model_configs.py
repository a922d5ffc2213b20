"""The variant table: official names and fields, big_vision sizes and short aliases."""

import pytest

from vit_jax.configs import models as model_configs

OFFICIAL_NAMES = ['ViT-Ti_16', 'ViT-S_16', 'ViT-S_32', 'ViT-B_8', 'ViT-B_16', 'ViT-B_32',
                  'ViT-L_16', 'ViT-L_32', 'ViT-H_14', 'ViT-S_16-gap-norep', 'ViT-B_16-gap-norep',
                  'ViT-S_32-gap-norep', 'ViT-B_32-gap-norep', 'R+ViT-Ti_16', 'R50+ViT-B_16',
                  'R26+ViT-B_32', 'R26+ViT-S_32', 'R50+ViT-L_32', 'testing']


def test_official_names_and_fields():
  assert set(OFFICIAL_NAMES) <= set(model_configs.MODEL_CONFIGS)
  b16 = model_configs.get_b16_config()
  assert b16.to_dict() == {
      'model_name': 'ViT-B_16', 'patches': {'size': (16, 16)}, 'hidden_size': 768,
      'transformer': {'mlp_dim': 3072, 'num_heads': 12, 'num_layers': 12,
                      'attention_dropout_rate': 0.0, 'dropout_rate': 0.0},
      'classifier': 'token', 'representation_size': None}
  r50 = model_configs.MODEL_CONFIGS['R50+ViT-B_16']
  assert (r50.patches.size, tuple(r50.resnet.num_layers), r50.transformer.dropout_rate) == (
      (1, 1), (3, 4, 9), 0.1)
  assert model_configs.MODEL_CONFIGS['ViT-L_32'].transformer.dropout_rate == 0.0
  assert model_configs.MODEL_CONFIGS['ViT-L_16'].transformer.dropout_rate == 0.1


@pytest.mark.parametrize('alias,name', [('B/16', 'ViT-B_16'), ('Ti/16', 'ViT-Ti_16'),
                                        ('R50+B/16', 'R50+ViT-B_16'), ('g/14', 'ViT-g_14'),
                                        ('G/14', 'ViT-G_14'), ('So400m/14', 'ViT-So400m_14')])
def test_short_aliases(alias, name):
  assert model_configs.get_config(alias).to_dict() == model_configs.get_config(name).to_dict()


def test_sizes_outside_the_table_are_built():
  config = model_configs.get_config('L/14')
  assert (config.model_name, config.hidden_size, config.transformer.num_layers,
          config.patches.size) == ('ViT-L_14', 1024, 24, (14, 14))
  giant = model_configs.get_config('ViT-G_14')
  assert (giant.hidden_size, giant.transformer.mlp_dim, giant.transformer.num_layers,
          giant.classifier) == (1664, 8192, 48, 'map')


def test_get_config_returns_an_unlocked_copy():
  config = model_configs.get_config('ViT-B_16')
  config.classifier = 'gap'
  config.new_field = 1
  assert model_configs.MODEL_CONFIGS['ViT-B_16'].classifier == 'token'


def test_unknown_names_are_reported():
  with pytest.raises(ValueError, match="Unknown model name 'ViT-Q_16'"):
    model_configs.get_config('ViT-Q_16')
  with pytest.raises(ValueError, match="Unknown model name 'X/16'"):
    model_configs.get_config('X/16')
