"""Von Mises-Fisher and uniform distributions on the unit sphere, as torch `Distribution`s.

Convention (docs/architecture.md, "Conventions"): `d` is the AMBIENT dimension everywhere. Points are unit
vectors of shape `(..., d)` on S^(d-1); `HypersphericalUniform(3)` is uniform on the ordinary
2-sphere, `VonMisesFisher` with `loc.shape[-1] == 3` lives there too.

Numerics: the Bessel functions behind the normaliser and the mean length are evaluated in float64
in log space with the exponential scaling `log(I_v(k) e^-k)` taken out, and results are cast back
to the distribution's dtype, so kappa from 1e-3 to 1e5 is safe in float32 and float64. kappa must
be > 0; the kappa -> 0 limit is `HypersphericalUniform`.

This module is pure maths: no I/O, no global seeds (pass a `torch.Generator` to sample).
"""

import math

import torch
from torch.distributions import Distribution, constraints, register_kl

__all__ = [
    "HypersphericalUniform",
    "VonMisesFisher",
    "log_ive",
    "log_sphere_area",
    "log_vmf_normaliser",
    "mean_resultant_length",
    "s2_one_minus_w",
    "sphere",
    "wood_one_minus_w",
]

_LOG_2PI = math.log(2.0 * math.pi)


class _Sphere(constraints.Constraint):
    """Unit vectors along the last axis, `| ||x|| - 1 | <= sqrt(eps of dtype)`."""

    event_dim = 1

    def check(self, value: torch.Tensor) -> torch.Tensor:
        tol = math.sqrt(torch.finfo(value.dtype).eps)
        return (torch.linalg.vector_norm(value, dim=-1) - 1.0).abs() <= tol

    def __repr__(self) -> str:
        return "Sphere(unit norm along the last axis)"


sphere = _Sphere()


# ---------------------------------------------------------------------------------------------
# Bessel functions in log space
# ---------------------------------------------------------------------------------------------

# Below this radius sqrt(v^2 + x^2) the power series is summed; above it the uniform (Debye)
# expansion with u_0..u_5 is within ~1e-9 of scipy's ive in log space (checked v = 1.5..100).
_DEBYE_RADIUS = 30.0
_SERIES_TERMS = 96  # the series terms peak at m ~ x/2 <= 15 and are < 1e-30 of it by m = 96

# Debye polynomials u_k(t) (Abramowitz & Stegun 9.3.9, 9.3.10), coefficients of t^0, t^1, ...
_DEBYE_U = (
    (1.0,),
    (0.0, 3.0, 0.0, -5.0),
    (0.0, 0.0, 81.0, 0.0, -462.0, 0.0, 385.0),
    (0.0, 0.0, 0.0, 30375.0, 0.0, -369603.0, 0.0, 765765.0, 0.0, -425425.0),
    (0.0, 0.0, 0.0, 0.0, 4465125.0, 0.0, -94121676.0, 0.0, 349922430.0, 0.0, -446185740.0,
     0.0, 185910725.0),
    (0.0, 0.0, 0.0, 0.0, 0.0, 1519035525.0, 0.0, -49286948607.0, 0.0, 284499769554.0, 0.0,
     -614135872350.0, 0.0, 566098157625.0, 0.0, -188699385875.0),
)
_DEBYE_DEN = (1.0, 24.0, 1152.0, 414720.0, 39813120.0, 6688604160.0)


def _log_ive_series(order: float, x: torch.Tensor) -> torch.Tensor:
    """log(I_v(x) e^-x) from the power series, summed in log space. Small x and v only."""
    m = torch.arange(_SERIES_TERMS, dtype=x.dtype, device=x.device)
    terms = (
        (2.0 * m + order) * torch.log(x / 2.0).unsqueeze(-1)
        - torch.lgamma(m + 1.0)
        - torch.lgamma(m + order + 1.0)
    )
    return torch.logsumexp(terms, dim=-1) - x


def _log_ive_debye(order: float, x: torch.Tensor) -> torch.Tensor:
    """log(I_v(x) e^-x) from the uniform asymptotic expansion in v. Needs sqrt(v^2+x^2) large."""
    radius = torch.sqrt(order * order + x * x)
    t = order / radius
    total = torch.ones_like(x)
    for k in range(1, len(_DEBYE_U)):
        poly = torch.zeros_like(x)
        for c in reversed(_DEBYE_U[k]):
            poly = poly * t + c
        total = total + poly / (_DEBYE_DEN[k] * order**k)
    # v*eta - x with the x cancelled analytically: sqrt(v^2+x^2) - x = v^2 / (sqrt(v^2+x^2) + x)
    eta_minus_x = order * order / (radius + x) + order * (torch.log(x) - torch.log(order + radius))
    return eta_minus_x - 0.5 * _LOG_2PI - 0.5 * torch.log(radius) + torch.log(total)


def _log_ive_general(order: float, x: torch.Tensor) -> torch.Tensor:
    """log(I_v(x) e^-x) for v >= 1.5, x > 0 (float64, no autograd)."""
    out = torch.empty_like(x)
    use_series = order * order + x * x < _DEBYE_RADIUS**2
    if use_series.any():
        out[use_series] = _log_ive_series(order, x[use_series])
    if (~use_series).any():
        out[~use_series] = _log_ive_debye(order, x[~use_series])
    return out


class _LogIveGeneral(torch.autograd.Function):
    """log(I_v(x) e^-x) with d/dx = I_{v+1}/I_v + v/x - 1 (the ratio from the next order)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, order: float) -> torch.Tensor:
        out = _log_ive_general(order, x)
        ctx.save_for_backward(x, out)
        ctx.order = order
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        x, out = ctx.saved_tensors
        # ratio - 1 via expm1: for large x the ratio is 1 - (2v+1)/(2x) and 1 - ratio matters
        ratio_minus_one = torch.expm1(log_ive(ctx.order + 1.0, x) - out)
        return grad * (ratio_minus_one + ctx.order / x), None


def log_ive(order: float, x: torch.Tensor) -> torch.Tensor:
    """log(I_order(x) * exp(-x)), the exponentially scaled modified Bessel function, in log space.

    Args:
        order: v >= 0, a multiple of 1/2 in practice (v = d/2 - 1 for the vMF on S^(d-1)).
        x: positive tensor, any shape, float64 (callers upcast).

    Returns:
        Tensor shaped like x, differentiable in x. v = 0 and 1 use torch.special.i0e/i1e,
        v = 1/2 the closed form I_1/2(x) = sqrt(2/(pi x)) sinh(x), other orders a log-space
        power series (small x and v) or the uniform asymptotic (Debye) expansion.
    """
    if order == 0.0:
        return torch.log(torch.special.i0e(x))
    if order == 1.0:
        return torch.log(torch.special.i1e(x))
    if order == 0.5:
        return -0.5 * (_LOG_2PI + torch.log(x)) + torch.log(-torch.expm1(-2.0 * x))
    return _LogIveGeneral.apply(x, order)


def log_sphere_area(dim: int) -> float:
    """log of the surface area of S^(dim-1) in R^dim: log(2 pi^(d/2) / Gamma(d/2))."""
    return math.log(2.0) + 0.5 * dim * math.log(math.pi) - math.lgamma(0.5 * dim)


def log_vmf_normaliser(kappa: torch.Tensor, dim: int) -> torch.Tensor:
    """log C_d(kappa), the vMF normaliser on S^(dim-1): the density is C_d(k) exp(k mu.x).

    log C_d(k) = (d/2-1) log k - (d/2) log(2 pi) - log I_{d/2-1}(k). For d = 3 this is the closed
    form log k - log(2 pi) - k - log(1 - exp(-2k)). Shape of kappa; computed in float64, returned
    in kappa's dtype.
    """
    k = kappa.double()
    order = 0.5 * dim - 1.0
    out = order * torch.log(k) - 0.5 * dim * _LOG_2PI - log_ive(order, k) - k
    return out.to(kappa.dtype)


def mean_resultant_length(kappa: torch.Tensor, dim: int) -> torch.Tensor:
    """A_d(kappa) = I_{d/2}(k) / I_{d/2-1}(k) = ||E[x]||, in (0, 1). Shape and dtype of kappa."""
    k = kappa.double()
    order = 0.5 * dim - 1.0
    return torch.exp(log_ive(order + 1.0, k) - log_ive(order, k)).to(kappa.dtype)


def _kl_to_uniform(kappa: torch.Tensor, dim: int) -> torch.Tensor:
    """KL(vMF(., k) || uniform on S^(d-1)) = log C_d(k) + k A_d(k) + log|S^(d-1)|, float64."""
    k = kappa.double()
    order = 0.5 * dim - 1.0
    log_ive_v = log_ive(order, k)
    mean_length = torch.exp(log_ive(order + 1.0, k) - log_ive_v)
    log_c = order * torch.log(k) - 0.5 * dim * _LOG_2PI - log_ive_v - k
    return log_c + k * mean_length + log_sphere_area(dim)


# ---------------------------------------------------------------------------------------------
# Sampling: the radial part y = 1 - w, w = mu.x, then a uniform tangent direction, then rotate
# ---------------------------------------------------------------------------------------------


def s2_one_minus_w(kappa: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Exact inverse-CDF draw of y = 1 - mu.x for the vMF on S^2 (d = 3), no rejection.

    The CDF of w on [-1, 1] is (exp(k w) - exp(-k)) / (exp(k) - exp(-k)); inverting it at
    r = 1 - u gives y = 1 - w = -log1p(r * expm1(-2k)) / k, which is exact for small k
    (y -> 2r, w uniform) and large k alike. Differentiable in kappa (pathwise, exact).

    Args:
        kappa: concentrations > 0, any shape (may be an expanded view).
    Returns:
        y in [0, 2], kappa's shape and dtype.
    """
    r = torch.rand(kappa.shape, generator=generator, dtype=kappa.dtype, device=kappa.device)
    return (-torch.log1p(r * torch.expm1(-2.0 * kappa)) / kappa).clamp(0.0, 2.0)


_WOOD_MAX_ROUNDS = 1000


def _beta_symmetric(n: int, dim: int, generator, device) -> torch.Tensor:
    """(n,) draws of Beta((d-1)/2, (d-1)/2): (1 + g_1/||g||)/2 for g ~ N(0, I_d), float64.

    The first coordinate of a uniform point on S^(d-1) has density ~ (1-t^2)^((d-3)/2), which
    maps to this Beta; it needs only randn, which takes a generator (torch's Beta does not).
    """
    g = torch.randn((n, dim), generator=generator, dtype=torch.float64, device=device)
    return 0.5 * (1.0 + g[:, 0] / torch.linalg.vector_norm(g, dim=-1))


def wood_one_minus_w(
    kappa: torch.Tensor, dim: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Wood's (1994) rejection draw of y = 1 - mu.x for the vMF on S^(dim-1), any dim >= 2.

    Vectorised: each round draws proposals only for the not-yet-accepted entries (measured
    acceptance >= 0.65 for d = 2..256, kappa = 1e-3..1e5, so 100k draws take ~10 rounds); gives
    up with RuntimeError after 1000 rounds. Rewritten in y = 1 - w so that large kappa keeps its
    precision. Gradient to kappa: the accepted Beta draw is held fixed and y flows through
    b(kappa) (the reparameterised part of Naesseth et al.'s rejection gradient, as in s-vae;
    the correction term for the acceptance step is omitted, so this kappa gradient is biased).

    Args:
        kappa: concentrations > 0, any shape (may be an expanded view).
    Returns:
        y in [0, 2], kappa's shape and dtype.
    """
    k = kappa.double().reshape(-1)
    m1 = dim - 1.0
    with torch.no_grad():
        b = m1 / (2.0 * k + torch.sqrt(4.0 * k * k + m1 * m1))
        y0 = 2.0 * b / (1.0 + b)  # 1 - x0 in Wood's notation
        log_norm = torch.log(y0 * (2.0 - y0))  # log(1 - x0^2)
        accepted = torch.empty_like(k)
        todo = torch.arange(k.numel(), device=k.device)
        for _ in range(_WOOD_MAX_ROUNDS):
            if todo.numel() == 0:
                break
            z = _beta_symmetric(todo.numel(), dim, generator, k.device)
            log_u = torch.log(
                torch.rand(todo.numel(), generator=generator, dtype=k.dtype, device=k.device)
            )
            bt, y0t = b[todo], y0[todo]
            y = 2.0 * bt * z / (1.0 - (1.0 - bt) * z)
            # k (w - x0) + (d-1) log(1 - x0 w) - (d-1) log(1 - x0^2) >= log u, in y and y0
            ok = k[todo] * (y0t - y) + m1 * (torch.log(y0t + y - y0t * y) - log_norm[todo]) >= log_u
            accepted[todo[ok]] = z[ok]
            todo = todo[~ok]
        if todo.numel():
            raise RuntimeError(
                f"vae/distributions.py: Wood's vMF sampler left {todo.numel()} draws "
                f"unaccepted after {_WOOD_MAX_ROUNDS} rounds (dim={dim})"
            )
    b = m1 / (2.0 * k + torch.sqrt(4.0 * k * k + m1 * m1))  # again, now with autograd
    y = 2.0 * b * accepted / (1.0 - (1.0 - b) * accepted)
    return y.clamp(0.0, 2.0).reshape(kappa.shape).to(kappa.dtype)


def _rotate_e1_to(loc: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Apply an orthogonal Q with Q e1 = loc to x (..., d); loc (*batch, d) broadcasts against x.

    Q = s H_u with u = e1 - s loc, s = -sign(loc_1): a Householder reflection, sign-flipped when
    loc_1 > 0 so that ||u||^2 = 2 + 2|loc_1| >= 2 (s-vae's e1 - loc vanishes as loc -> e1).
    Any orthogonal Q works because x is symmetric about e1. Differentiable in loc.
    """
    s = torch.where(loc[..., :1] > 0, -1.0, 1.0).to(loc.dtype)
    u = -s * loc
    u = torch.cat((u[..., :1] + 1.0, u[..., 1:]), dim=-1)
    coef = (-2.0 * s) / (u * u).sum(-1, keepdim=True)  # (*batch, 1): cheap
    # x.u as a matmul: a sum over a last axis of size 3 is several times slower in torch
    x_dot_u = (x.unsqueeze(-2) @ u.unsqueeze(-1)).squeeze(-1)
    return torch.addcmul(s * x, x_dot_u, coef * u)


# ---------------------------------------------------------------------------------------------
# Distributions
# ---------------------------------------------------------------------------------------------


class VonMisesFisher(Distribution):
    """von Mises-Fisher distribution on S^(d-1) in R^d: density C_d(k) exp(k loc.x).

    Args:
        loc: (*batch, d) unit vectors, d >= 2 (the mean direction).
        concentration: kappa > 0 of shape (*batch) -- NO trailing singleton axis -- or
            broadcastable to it (a float, a 0-d tensor, ...); a single direction loc (d,) may
            take any kappa shape. A concentration, not a variance. batch_shape is
            broadcast(loc.shape[:-1], concentration.shape).
        validate_args: as in torch.distributions (checks unit norm and kappa > 0).

    event_shape is (d,). `rsample` is reparameterised: gradients flow to loc through the
    Householder rotation, and to kappa exactly on S^2 (inverse CDF); for d != 3 Wood's rejection
    sampler gives kappa only a biased gradient (see `wood_one_minus_w`). `sample` and `rsample`
    take an optional `generator`.
    """

    arg_constraints = {"loc": sphere, "concentration": constraints.positive}
    support = sphere
    has_rsample = True

    def __init__(self, loc, concentration, validate_args=None):
        if not isinstance(loc, torch.Tensor) or loc.dim() < 1 or loc.shape[-1] < 2:
            raise ValueError(
                "vae/distributions.py: VonMisesFisher loc must be a tensor of shape (..., d) "
                f"with d >= 2, got {loc!r}"
            )
        if not isinstance(concentration, torch.Tensor):
            concentration = torch.as_tensor(concentration, device=loc.device)
        if loc.dim() > 1 and concentration.dim() > loc.dim() - 1:
            # catches the (..., 1) convention of s-vae, which would silently broadcast to (B, B)
            raise ValueError(
                "vae/distributions.py: VonMisesFisher concentration must have shape loc.shape[:-1]"
                f" = {tuple(loc.shape[:-1])} or broadcast to it, without a trailing event axis; "
                f"got {tuple(concentration.shape)}"
            )
        dtype = torch.promote_types(loc.dtype, concentration.dtype)
        if not dtype.is_floating_point:
            dtype = torch.get_default_dtype()
        try:
            batch_shape = torch.broadcast_shapes(loc.shape[:-1], concentration.shape)
        except RuntimeError as err:
            raise ValueError(
                "vae/distributions.py: VonMisesFisher concentration of shape "
                f"{tuple(concentration.shape)} does not broadcast to loc's batch shape "
                f"{tuple(loc.shape[:-1])} (concentration has no trailing event axis)"
            ) from err
        self.dim = loc.shape[-1]
        self.loc = loc.to(dtype).expand(*batch_shape, self.dim)
        self.concentration = concentration.to(dtype).expand(batch_shape)
        super().__init__(batch_shape, torch.Size([self.dim]), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(VonMisesFisher, _instance)
        batch_shape = torch.Size(batch_shape)
        new.dim = self.dim
        new.loc = self.loc.expand(*batch_shape, self.dim)
        new.concentration = self.concentration.expand(batch_shape)
        super(VonMisesFisher, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    @property
    def mean(self) -> torch.Tensor:
        """(*batch, d): A_d(kappa) loc."""
        return mean_resultant_length(self.concentration, self.dim).unsqueeze(-1) * self.loc

    @property
    def mode(self) -> torch.Tensor:
        return self.loc

    def rsample(self, sample_shape=(), generator: torch.Generator | None = None):
        """(*sample_shape, *batch, d) reparameterised draws (exact inverse CDF when d = 3)."""
        return self._rsample(sample_shape, generator, wood=self.dim != 3)

    def sample(self, sample_shape=(), generator: torch.Generator | None = None):
        with torch.no_grad():
            return self.rsample(sample_shape, generator)

    def _rsample(self, sample_shape, generator, wood: bool) -> torch.Tensor:
        """rsample with the radial sampler chosen: Wood's rejection (any d) or exact (d = 3)."""
        shape = self._extended_shape(sample_shape)[:-1]
        kappa = self.concentration.expand(shape)
        y = wood_one_minus_w(kappa, self.dim, generator) if wood else s2_one_minus_w(kappa, generator)
        # x = (w, sqrt(1 - w^2) v) in the frame where loc = e1, v uniform on S^(d-2)
        x = torch.empty((*shape, self.dim), dtype=self.loc.dtype, device=self.loc.device)
        x[..., 0] = 1.0 - y
        # sqrt(1 - w^2) = sqrt(y (2 - y)); clamped so its gradient stays finite at y = 0
        radius = torch.sqrt((y * (2.0 - y)).clamp_min(1e-30))
        opts = {"generator": generator, "dtype": x.dtype, "device": x.device}
        if self.dim == 3:
            phi = (2.0 * math.pi) * torch.rand(shape, **opts)
            x[..., 1] = radius * torch.cos(phi)
            x[..., 2] = radius * torch.sin(phi)
        else:
            g = torch.randn((*shape, self.dim - 1), **opts)
            norm = torch.linalg.vector_norm(g, dim=-1).clamp_min(1e-30)
            x[..., 1:] = (radius / norm).unsqueeze(-1) * g
        return _rotate_e1_to(self.loc, x)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """(*sample, *batch) log densities w.r.t. the surface measure of S^(d-1)."""
        if self._validate_args:
            self._validate_sample(value)
        k = self.concentration.double()
        # log C + k is O(log k): adding k (mu.x - 1) keeps float32 results accurate at large k
        log_c_plus_k = (
            (0.5 * self.dim - 1.0) * torch.log(k)
            - 0.5 * self.dim * _LOG_2PI
            - log_ive(0.5 * self.dim - 1.0, k)
        )
        cos_minus_one = (value.double() * self.loc.double()).sum(-1) - 1.0
        return (log_c_plus_k + k * cos_minus_one).to(self.loc.dtype)

    def entropy(self) -> torch.Tensor:
        """(*batch): H = -log C_d(k) - k A_d(k)."""
        return (log_sphere_area(self.dim) - _kl_to_uniform(self.concentration, self.dim)).to(
            self.loc.dtype
        )


class HypersphericalUniform(Distribution):
    """Uniform distribution on S^(dim-1) in R^dim (dim is the AMBIENT dimension, >= 2).

    `HypersphericalUniform(3)` is uniform on the ordinary 2-sphere. batch_shape is (),
    event_shape (dim,); log_prob is -log(area of S^(dim-1)) everywhere on the sphere.
    """

    arg_constraints = {}
    support = sphere
    has_rsample = False

    def __init__(self, dim: int, dtype=None, device=None, validate_args=None):
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 2:
            raise ValueError(
                "vae/distributions.py: HypersphericalUniform dim is the ambient dimension d "
                f"(points on S^(d-1) in R^d), an int >= 2; got {dim!r}"
            )
        self.dim = dim
        self._dtype = dtype if dtype is not None else torch.get_default_dtype()
        self._device = torch.device(device) if device is not None else torch.device("cpu")
        super().__init__(torch.Size(), torch.Size([dim]), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        if torch.Size(batch_shape) != torch.Size():
            raise ValueError("vae/distributions.py: HypersphericalUniform has batch_shape ()")
        return self

    @property
    def mean(self) -> torch.Tensor:
        return torch.zeros(self.dim, dtype=self._dtype, device=self._device)

    def sample(self, sample_shape=(), generator: torch.Generator | None = None):
        """(*sample_shape, dim) uniform unit vectors (normalised Gaussians)."""
        g = torch.randn(
            (*torch.Size(sample_shape), self.dim),
            generator=generator,
            dtype=self._dtype,
            device=self._device,
        )
        return g / torch.linalg.vector_norm(g, dim=-1, keepdim=True).clamp_min(1e-30)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        return torch.full(
            value.shape[:-1], -log_sphere_area(self.dim), dtype=value.dtype, device=value.device
        )

    def entropy(self) -> torch.Tensor:
        return torch.tensor(log_sphere_area(self.dim), dtype=self._dtype, device=self._device)


@register_kl(VonMisesFisher, HypersphericalUniform)
def _kl_vmf_uniform(q: VonMisesFisher, p: HypersphericalUniform) -> torch.Tensor:
    """(*q.batch): KL(q || p) = log C_d(k) + k A_d(k) + log|S^(d-1)| = log|S^(d-1)| - H(q)."""
    if q.dim != p.dim:
        raise ValueError(
            f"vae/distributions.py: KL between a vMF on S^({q.dim - 1}) (d={q.dim}) and a "
            f"uniform on S^({p.dim - 1}) (dim={p.dim}): the ambient dimensions must match"
        )
    return _kl_to_uniform(q.concentration, q.dim).to(q.loc.dtype)
