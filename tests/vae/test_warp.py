"""vae.model's warp decoder (`decoder: warp`): the flow moves pixels the way it says, a new
network draws the reference, the correction is priced, training runs the decoder as decoding does
(the target's pose only moves the drawn face); the coarse flow term pulls the flow farther than
bilinear sampling sees."""

from __future__ import annotations

import math

import pytest
import torch

from vae.model import REFERENCE_EPS, ModelConfig, build_model, warp

WARP = {"image_size": (16, 12), "channels": (4, 8), "hidden": 16, "decoder": "warp",
        "upsample": "bilinear"}


def faces(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand((n, 1, 16, 12), generator=g), torch.randint(0, 7, (n,), generator=g)


def test_a_flow_moves_the_maps_by_its_pixels_and_zero_flow_leaves_them():
    image = torch.zeros(1, 1, 16, 16)
    image[..., 6:10, 4:8] = 1.0
    half = image[..., ::2, ::2]  # the same picture at 1/2 resolution
    still = torch.zeros(1, 2, 4, 4)
    torch.testing.assert_close(warp(image, still), image)
    right_down = still.clone()
    right_down[:, 0], right_down[:, 1] = 2.0, 4.0  # pixels of the 16x16 image
    moved = warp(image, right_down)
    torch.testing.assert_close(moved[..., 10:14, 6:10], torch.ones(1, 1, 4, 4))
    assert moved.sum() == pytest.approx(16.0) and moved[..., 6:10, 4:6].max() == 0
    # on maps at half resolution the same flow is half as many of their pixels
    torch.testing.assert_close(warp(half, right_down)[..., 5:7, 3:5], torch.ones(1, 1, 2, 2))
    # a finer flow (cells of 2 pixels) still counts pixels of the full image
    fine = torch.zeros(1, 2, 8, 8)
    fine[:, 0], fine[:, 1] = 2.0, 4.0
    torch.testing.assert_close(warp(image, fine, cell=2), moved)


def test_a_new_warp_decoder_draws_the_reference_and_prices_its_correction():
    model = build_model(ModelConfig(**WARP, class_weight=3.0, correction_weight=0.5), seed=1)
    x, y = faces()
    ref = x.clamp(REFERENCE_EPS, 1 - REFERENCE_EPS)
    z = torch.nn.functional.normalize(torch.randn(3, 3), dim=1)
    with torch.no_grad():
        torch.testing.assert_close(model.decode(z, model.identity_code(ref)), ref)
    g = torch.Generator().manual_seed(0)
    losses, _ = model.loss(x, y, g, ref)
    torch.testing.assert_close(losses.total, losses.recon + losses.kl + 3.0 * losses.ce)
    with torch.no_grad():
        model.decoder.out.bias.fill_(0.25)  # a correction of 0.25 logits on every pixel
    priced, _ = model.loss(x, y, torch.Generator().manual_seed(0), ref)
    torch.testing.assert_close(
        priced.total, priced.recon + priced.kl + 3.0 * priced.ce + 0.5 * 0.25 * 16 * 12)


@pytest.mark.parametrize("fine_px", [None, 0.0, 1.0, -1.0])
def test_templates_start_blank_and_are_mixed_by_the_code_moved_by_the_flow_and_gained(fine_px):
    """A new templated decoder draws the reference; a picture (one bright pixel) chosen by the
    code lands where the flow moves it (2 px right), plus, with templates_fine, its finer
    flow's change (fine_px, down), scaled by 1 + the gain, as part of the priced correction."""
    fine = fine_px is not None
    model = build_model(ModelConfig(**WARP, templates=2, templates_fine=fine), seed=1)
    x, _ = faces()
    ref = x.clamp(REFERENCE_EPS, 1 - REFERENCE_EPS)
    code = model.identity_code(ref)
    z = torch.nn.functional.normalize(
        torch.randn(3, 3, generator=torch.Generator().manual_seed(5)), dim=1)
    with torch.no_grad():
        torch.testing.assert_close(model.decode(z, code), ref)
        decoder = model.decoder
        decoder.templates[1, 4, 3] = 2.0  # picture 1: 2 logits at row 4, column 3
        decoder.mix.weight.zero_()
        decoder.mix.bias.copy_(torch.tensor([0.0, 1.5]))  # every code takes 1.5 x picture 1
        decoder.gain.bias.fill_(1.0)  # gain 2 everywhere
        decoder.flow.bias.copy_(torch.tensor([math.atanh(2.0 / decoder.max_shift), 0.0]))
        if fine:
            decoder.template_flow.bias.copy_(
                torch.tensor([0.0, math.atanh(fine_px / (decoder.max_shift / 2))]))
        logits, charge, moved = model._decode(z, code, None)
    change = logits - torch.logit(moved, eps=REFERENCE_EPS)  # the correction
    expected = torch.zeros_like(change)
    expected[..., 4 + int(fine_px or 0), 5] = 1.5 * 2.0 * 2.0  # moved 2 px right, fine_px down
    torch.testing.assert_close(change, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(charge, expected.abs(), atol=1e-5, rtol=0)


def test_vmf_mixed_templates_are_drawn_near_their_centre_only():
    """templates_mix vmf: a picture (one bright pixel) with its centre at the code (1, 0, 0)
    is drawn at its full weight there and at exp(kappa (cos t - 1)) at angle t from it (the
    closed form; 1.5e-5 of it at 90 degrees with kappa 11), the linear mix's negated picture
    never."""
    model = build_model(ModelConfig(**WARP, templates=2, templates_mix="vmf"), seed=1)
    x, _ = faces()
    code = model.identity_code(x[:1].clamp(REFERENCE_EPS, 1 - REFERENCE_EPS)).expand(4, -1)
    angles = torch.tensor([0.0, 30.0, 90.0, 180.0])
    t = torch.deg2rad(angles)
    z = torch.stack([torch.cos(t), torch.sin(t), torch.zeros(4)], dim=1)
    kappa = 11.0
    with torch.no_grad():
        decoder = model.decoder
        decoder.templates[0, 4, 3] = 3.0
        decoder.centres.copy_(torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, -1.0]]))  # any length
        decoder.log_kappa.fill_(math.log(kappa))
        logits, _, moved = model._decode(z, code, None)
    change = (logits - torch.logit(moved, eps=REFERENCE_EPS))[:, 0, 4, 3]
    expected = 3.0 * torch.exp(kappa * (torch.cos(t) - 1))
    torch.testing.assert_close(change, expected, atol=1e-5, rtol=1e-4)
    assert change[2] < 1e-4 and change[3] >= 0


@pytest.mark.parametrize("still", [False, True])
def test_the_last_stage_reads_the_reference_unmoved_with_still_reference(still):
    """A flow of 2 px right everywhere, and a last stage that passes one reference channel on
    to the correction (every other weight zero): the correction is the reference as moved (the
    moved reference's channel) or, with still_reference, as it was (the added channel)."""
    model = build_model(ModelConfig(**WARP, still_reference=still), seed=1)
    x, _ = faces()
    ref = x[:1].clamp(REFERENCE_EPS, 1 - REFERENCE_EPS)
    code = model.identity_code(ref)
    z = torch.nn.functional.normalize(torch.randn(1, 3), dim=1)
    with torch.no_grad():
        decoder = model.decoder
        decoder.film.weight.zero_()
        decoder.film.bias.zero_()  # FiLM off: scale 1, shift 0
        decoder.flow.bias.copy_(torch.tensor([math.atanh(2.0 / decoder.max_shift), 0.0]))
        c1 = decoder.stage1.weight.shape[0]
        assert decoder.stage1.weight.shape[1] == c1 + (2 if still else 1)
        decoder.stage1.weight.zero_()
        decoder.stage1.bias.zero_()
        decoder.stage1.weight[0, -1, 1, 1] = 1.0  # the last input channel, passed through
        decoder.out.weight.zero_()
        decoder.out.weight[0, 0, 1, 1] = 1.0
        logits, charge, moved = model._decode(z, code, None)
    as_moved = warp(ref, torch.tensor([2.0, 0.0]).view(1, 2, 1, 1).expand(1, 2, 4, 3))
    torch.testing.assert_close(logits - torch.logit(moved, eps=REFERENCE_EPS),
                               ref if still else as_moved, atol=1e-5, rtol=0)
    assert (ref - as_moved).abs().max() > 0.1  # the two differ: the test can tell them apart


def test_warp_training_runs_the_decoder_as_decoding_does_then_moves_the_face_to_the_pose():
    """The skip decoder's layers read the target's pose in training (not when decoding); the
    warp decoder draws the face from its code and reference alone, and training moves that face
    as a whole (the affine pose warp) to the target's pose: with no pose change, the
    reconstruction is the decoded face."""
    model = build_model(ModelConfig(**WARP), seed=2)
    with torch.no_grad():  # a flow and a correction that depend on the code
        for p in (model.decoder.flow.weight, model.decoder.out.weight):
            p.normal_(0, 0.3, generator=torch.Generator().manual_seed(3))
    model.eval()
    x, y = faces()
    ref = faces(seed=9)[0]
    code = model.identity_code(ref)
    with torch.no_grad():
        _, out = model.loss(x, y, torch.Generator().manual_seed(0), ref)
        drawn = model.decode_logits(out.z, code)
        torch.testing.assert_close(out.recon, torch.sigmoid(drawn))  # zero pose warp at init
        model.warp.weight.normal_(0, 0.1, generator=torch.Generator().manual_seed(4))
        _, out = model.loss(x, y, torch.Generator().manual_seed(0), ref)
        change = model.pose_encoder(x) - code[:, -model.config.pose_dim:]
        torch.testing.assert_close(out.recon, torch.sigmoid(model._pose_warp(drawn, change)))
        assert not torch.allclose(out.recon, torch.sigmoid(drawn), atol=1e-3)


@pytest.mark.parametrize("bad, word", [
    ({"decoder": "flow"}, "skip, warp"),
    ({"decoder": "warp", "kind": "plain"}, "needs kind='identity'"),
    ({"decoder": "warp", "max_shift": 0.0}, "max_shift"),
    ({"decoder": "warp", "correction_weight": -1.0}, "weight >= 0"),
    ({"decoder": "warp", "coarse_weight": -1.0}, "coarse_weight=-1.0"),
    ({"decoder": "skip", "coarse_weight": 1.0}, "coarse_weight needs decoder='warp'"),
    ({"decoder": "warp", "templates": -1}, "templates=-1"),
    ({"decoder": "skip", "templates": 4}, "templates needs decoder='warp'"),
    ({"decoder": "warp", "templates_fine": True}, "templates_fine needs templates > 0"),
    ({"decoder": "skip", "still_reference": True}, "still_reference needs decoder='warp'"),
    ({"decoder": "warp", "templates": 2, "templates_mix": "mlp"}, "allowed: linear, vmf"),
    ({"decoder": "warp", "templates_mix": "vmf"}, "templates_mix needs templates > 0"),
])
def test_warp_config_validation_names_the_field(bad, word):
    with pytest.raises(ValueError, match=word):
        ModelConfig(**bad)


def test_the_coarse_term_pulls_the_flow_towards_a_brow_4_px_higher_where_bilinear_cannot():
    """A dark brow 2 px thick in the reference, 4 px higher in the target, the flow half a pixel
    down (between pixels): the reconstruction gives the flow no gradient at all (bilinear
    sampling sees about a pixel), while coarse_weight's blurred difference of the moved
    reference and the target (the blur checked against scipy's Gaussian filter) moves it up."""
    from scipy.ndimage import gaussian_filter

    from vae.model import COARSE_SIGMA, blur

    skin = torch.full((2, 1, 16, 12), 0.8)
    ref, target = skin.clone(), skin.clone()
    ref[..., 9:11, :] = 0.2
    target[..., 5:7, :] = 0.2
    torch.testing.assert_close(
        blur(target, COARSE_SIGMA),
        torch.from_numpy(gaussian_filter(target.numpy(), (0, 0, COARSE_SIGMA, COARSE_SIGMA),
                                         mode="nearest", truncate=3.0)))

    def flow_pull(coarse_weight):
        """d loss / d (the flow's downward shift, one bias for the whole frame)."""
        model = build_model(ModelConfig(**WARP, coarse_weight=coarse_weight), seed=2)
        with torch.no_grad():
            model.decoder.flow.bias[1] = math.atanh(0.5 / model.decoder.max_shift)
        losses, _ = model.loss(target, torch.tensor([0, 0]), torch.Generator().manual_seed(0),
                               ref)
        losses.total.backward()
        return model.decoder.flow.bias.grad[1].item()

    assert flow_pull(0.0) == pytest.approx(0.0, abs=1e-3)
    assert flow_pull(10.0) > 10.0  # descent moves the flow up, towards the target's brow
