"""vae.model's warp decoder (`decoder: warp`): the flow moves pixels the way it says, a new
network draws the reference, the correction is priced, training runs the decoder as decoding does
(the target's pose only moves the drawn face); the finer flow and the edge price do what they say."""

from __future__ import annotations

import math

import pytest
import torch

from vae.model import MOUTH, REFERENCE_EPS, ModelConfig, build_model, mouth_region, on_cells, warp

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


def test_the_fine_flow_starts_still_and_then_moves_the_reference_on_top_of_the_coarse_one():
    """fine_shift adds a 1/2-resolution flow: new, it changes nothing (the coarse-only decoder's
    pixels); a fine flow of 1 pixel right moves the drawn reference 1 pixel right."""
    coarse = build_model(ModelConfig(**WARP), seed=5).eval()
    model = build_model(ModelConfig(**WARP, fine_shift=2.0), seed=5).eval()
    ref = torch.zeros(1, 1, 16, 12)
    ref[..., 4:12, 3:5] = 1.0  # a bright bar, columns 3-4
    ref = ref.clamp(REFERENCE_EPS, 1 - REFERENCE_EPS)
    z = torch.nn.functional.normalize(torch.randn(1, 3), dim=1)
    with torch.no_grad():
        code = model.identity_code(ref)
        torch.testing.assert_close(model.decode(z, code), coarse.decode(z, code))
        torch.testing.assert_close(model.decode(z, code), ref)
        model.decoder.fine.bias.copy_(torch.tensor([0.5, 0.0]))  # 2 tanh(0.5) = 0.92 px right
        moved = model.decode(z, code)
    assert moved[0, 0, 8, 5] > 0.8 and moved[0, 0, 8, 3] < 0.2  # the bar now covers 4-5


def test_the_edge_price_charges_a_correction_more_on_the_references_edges():
    """edge_price 0: a pixel of correction costs |correction| anywhere; edge_price 2: on the
    moved reference's edge it costs 1 + 2 x edge / mean edge, on flat skin 1; the total
    loss adds correction_weight x the summed charge."""
    ref = torch.full((1, 1, 16, 12), 0.5)
    ref[..., :, 6:] = 0.9  # one vertical edge, between columns 5 and 6
    flat, edge = torch.zeros(2, 1, 16, 12), torch.zeros(2, 1, 16, 12)
    flat[..., 8, 2], edge[..., 8, 5] = 0.25, 0.25  # one pixel of correction each
    plain = build_model(ModelConfig(**WARP), seed=1).decoder
    priced = build_model(ModelConfig(**WARP, edge_price=2.0), seed=1).decoder
    for correction in (flat, edge):
        assert plain._charge(correction, ref).sum() == pytest.approx(2 * 0.25)
    assert priced._charge(flat, ref).sum() == pytest.approx(2 * 0.25)
    # the edge is 1 of the 12 columns: edge / mean edge = 12 there
    assert priced._charge(edge, ref).sum() == pytest.approx(2 * 0.25 * (1 + 2 * 12))
    x, y = faces()
    model = build_model(ModelConfig(**WARP, class_weight=0.0, correction_weight=0.5,
                                    edge_price=2.0), seed=1)
    with torch.no_grad():
        model.decoder.out.bias.fill_(0.25)
    losses, _ = model.loss(x, y, torch.Generator().manual_seed(0), ref.expand(3, -1, -1, -1))
    # edge / mean edge averages 1 over the image: the charge is (1 + 2) x |correction|
    torch.testing.assert_close(losses.total - losses.recon - losses.kl,
                               torch.tensor(0.5 * 0.25 * 16 * 12 * 3.0))


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
    ({"decoder": "warp", "fine_shift": -1.0}, "fine_shift"),
    ({"decoder": "skip", "edge_price": 1.0}, "need decoder='warp'"),
    ({"pose_rows": 0.0}, "pose_rows"),
    ({"decoder": "warp", "correction_cell": 3}, "cell 1 or 2"),
    ({"decoder": "warp", "mouth_price": -1.0}, "price >= 0"),
    ({"decoder": "skip", "mouth_price": 0.5}, "need decoder='warp'"),
    ({"decoder": "warp", "coarse_weight": -1.0}, "coarse_weight=-1.0"),
    ({"decoder": "skip", "coarse_weight": 1.0}, "coarse_weight needs decoder='warp'"),
])
def test_warp_config_validation_names_the_field(bad, word):
    with pytest.raises(ValueError, match=word):
        ModelConfig(**bad)


def test_the_pose_code_of_the_upper_face_ignores_the_mouth_and_pose_warp_off_keeps_the_face():
    """pose_rows 0.5: the pose thumbnail reads the top half of the frame, so a mouth drawn in
    the bottom half leaves the pose code as it was (the whole frame's code changes); pose_warp
    false: training reconstructs the decoded face itself, whatever the pose warp's weights."""
    x, y = faces()
    mouth = x.clone()
    mouth[..., 11:13, 3:9] = 0.0
    upper = build_model(ModelConfig(**WARP, pose_rows=0.5), seed=2)
    whole = build_model(ModelConfig(**WARP), seed=2)
    torch.testing.assert_close(upper.pose_encoder(mouth), upper.pose_encoder(x))
    assert not torch.allclose(whole.pose_encoder(mouth), whole.pose_encoder(x))
    assert not torch.allclose(upper.pose_encoder(x.flip(2)), upper.pose_encoder(x))
    still = build_model(ModelConfig(**WARP, pose_warp=False), seed=2).eval()
    ref = faces(seed=9)[0]
    with torch.no_grad():
        still.warp.weight.normal_(0, 0.1, generator=torch.Generator().manual_seed(4))
        still.decoder.flow.weight.normal_(0, 0.3, generator=torch.Generator().manual_seed(3))
        _, out = still.loss(x, y, torch.Generator().manual_seed(0), ref)
        torch.testing.assert_close(out.recon, still.decode(out.z, still.identity_code(ref)))


def test_the_mouth_price_charges_less_inside_the_mouth_region():
    """mouth_region is 1 at the frame's mouth, 1/2 on its ellipse, near 0 at the brows; with
    mouth_price 0.25 a pixel of correction there costs a quarter, at the brows the full price."""
    size = (64, 64)
    region = mouth_region(size)[0, 0]
    row, col = (round(v * 64 - 0.5) for v in MOUTH[:2])
    reach = round(MOUTH[3] * 64)  # the ellipse's half width, pixels
    assert region.max() == region[row, col] == pytest.approx(1.0, abs=0.01)
    assert region[row, col + reach] == pytest.approx(0.5, abs=0.05)
    assert region[row, col - reach] == pytest.approx(0.5, abs=0.05)
    assert region[20, 32] < 1e-3
    config = {**WARP, "image_size": size}
    priced = build_model(ModelConfig(**config, mouth_price=0.25), seed=1).decoder
    plain = build_model(ModelConfig(**config), seed=1).decoder
    ref = torch.full((1, 1, *size), 0.5)
    mouth, brow = torch.zeros(1, 1, *size), torch.zeros(1, 1, *size)
    mouth[..., row, col], brow[..., 20, 32] = 1.0, 1.0
    assert priced._charge(mouth, ref).sum() == pytest.approx(0.25, abs=0.01)
    assert priced._charge(brow, ref).sum() == pytest.approx(1.0, abs=1e-3)
    assert plain._charge(mouth, ref).sum() == plain._charge(brow, ref).sum() == 1.0


def test_a_correction_on_cells_has_no_single_pixel_detail():
    """on_cells(., 2) turns a one-pixel checkerboard into nothing, keeps a flat correction
    and a 2-pixel-wide bar's mass; a new decoder with correction_cell 2 still draws the
    reference."""
    checker = (torch.arange(8)[:, None] + torch.arange(8)[None, :]) % 2 * 2.0 - 1.0
    torch.testing.assert_close(on_cells(checker[None, None], 2), torch.zeros(1, 1, 8, 8))
    flat = torch.full((1, 1, 8, 8), 0.3)
    torch.testing.assert_close(on_cells(flat, 2), flat)
    torch.testing.assert_close(on_cells(checker[None, None], 1), checker[None, None])
    model = build_model(ModelConfig(**WARP, correction_cell=2), seed=1)
    ref = faces()[0].clamp(REFERENCE_EPS, 1 - REFERENCE_EPS)
    z = torch.nn.functional.normalize(torch.randn(3, 3), dim=1)
    with torch.no_grad():
        torch.testing.assert_close(model.decode(z, model.identity_code(ref)), ref)


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
