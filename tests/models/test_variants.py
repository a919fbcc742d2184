"""ssl_gen.models.variants: the variant's value unless the field was set explicitly."""

import pytest

from ssl_gen.models import gan


def test_a_variant_fills_defaults_and_explicit_arguments_win():
    assert gan.Model(variant="tiny").z_dim == gan.VARIANTS["tiny"]["latent_dim"] == 4
    assert gan.Model(variant="tiny", latent_dim=7).z_dim == 7
    assert gan.Model(latent_dim=7).z_dim == 7 and gan.Model().z_dim == 16


def test_an_unknown_variant_is_one_line():
    with pytest.raises(ValueError, match="gan: unknown variant 'huge'; known: metz17, tiny"):
        _ = gan.Model(variant="huge").z_dim
