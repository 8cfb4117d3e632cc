// The face decoder of `online.faces: browser`, run as a Web Worker by the participant's page
// (app.js): the model's decoder (vae/model.py, Decoder.parts) written out, so the server sends
// a face's child and code instead of its PNG (mcmcp/online/faces.py says what it reads).
//
// Message in:  {id, base, child, code}: base the study's API URL ("…/api/"), child the child's
//              id ("" = the model's default), code the face's point on the sphere (d numbers).
// Message out: {id, width, height, pixels} (pixels: Uint8Array of width x height grey levels,
//              row by row, as the server's PNG would hold them) or {id, error}.
//
// Arithmetic: every map is stored as float32 (Math.fround), as torch stores it; sums run in
// float64. Pixels equal the server's to float rounding (tests/online/test_web_faces.py).
"use strict";

const F = Math.fround;
const FORMAT = 1; // mcmcp/online/faces.py
const models = new Map(); // base URL -> promise of the decoder bundle
const children = new Map(); // base URL + child id -> promise of the child's maps

function tensor(t) {
  // {shape, data: base64 float32 little-endian} -> {shape, data: Float32Array}
  const bytes = Uint8Array.from(atob(t.data), (c) => c.charCodeAt(0));
  return { shape: t.shape, data: new Float32Array(bytes.buffer) };
}

async function fetchJSON(url) {
  // retried while the server cannot be reached or fails (a restart), as the page's own
  // requests are; a refusal (4xx) is final
  let res = null;
  for (let attempt = 0; ; attempt++) {
    try { res = await fetch(url, { credentials: "same-origin" }); } catch (err) { res = null; }
    if (res && res.status < 500) break;
    await new Promise((resolve) => setTimeout(resolve, Math.min(500 * 2 ** attempt, 5000)));
  }
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`);
  const bundle = await res.json();
  if (bundle.format !== FORMAT) throw new Error(`${url}: bundle format ${bundle.format}`);
  const tensors = {};
  for (const [name, t] of Object.entries(bundle.tensors)) tensors[name] = tensor(t);
  return { ...bundle, tensors };
}

function cached(map, key, url) {
  // one fetch per bundle; a refused one is forgotten, so the next face asks again
  if (!map.has(key)) {
    map.set(key, fetchJSON(url).catch((err) => { map.delete(key); throw err; }));
  }
  return map.get(key);
}

function model(base) {
  return cached(models, base, `${base}decoder`);
}

function child(base, id) {
  return cached(children, `${base}\n${id}`, `${base}decoder?child=${encodeURIComponent(id)}`);
}

function linear(x, W, b) {
  // x (n) -> W x + b, W (m, n)
  const [m, n] = W.shape;
  const out = new Float32Array(m);
  for (let o = 0; o < m; o++) {
    let s = 0;
    for (let i = 0; i < n; i++) s += W.data[o * n + i] * x[i];
    out[o] = F(s + b.data[o]);
  }
  return out;
}

function conv3x3(x, cin, h, w, W, b) {
  // maps (cin, h, w) -> (cout, h, w): 3x3 convolution, zero padding 1, plus bias; a kernel
  // row's three taps go over an input row in one pass
  const cout = W.shape[0];
  const out = new Float32Array(cout * h * w);
  const acc = new Float64Array(h * w);
  for (let o = 0; o < cout; o++) {
    acc.fill(0);
    for (let c = 0; c < cin; c++) {
      const plane = c * h * w;
      for (let ky = 0; ky < 3; ky++) {
        const k = ((o * cin + c) * 3 + ky) * 3;
        const k0 = W.data[k];
        const k1 = W.data[k + 1];
        const k2 = W.data[k + 2];
        const dy = ky - 1;
        const y0 = Math.max(0, -dy);
        const y1 = Math.min(h, h - dy);
        for (let y = y0; y < y1; y++) {
          const row = y * w;
          const src = plane + (y + dy) * w;
          acc[row] += k1 * x[src] + k2 * x[src + 1];
          for (let i = 1; i < w - 1; i++) {
            acc[row + i] += k0 * x[src + i - 1] + k1 * x[src + i] + k2 * x[src + i + 1];
          }
          acc[row + w - 1] += k0 * x[src + w - 2] + k1 * x[src + w - 1];
        }
      }
    }
    const bias = b.data[o];
    for (let i = 0; i < h * w; i++) out[o * h * w + i] = F(acc[i] + bias);
  }
  return out;
}

function cat(a, b) {
  const out = new Float32Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

function filmRelu(x, c, hw, film, offset) {
  // relu(x (1 + scale) + shift) per channel; film[offset..] holds c scales then c shifts
  for (let ch = 0; ch < c; ch++) {
    const scale = F(1 + film[offset + ch]);
    const shift = film[offset + c + ch];
    for (let i = ch * hw; i < (ch + 1) * hw; i++) {
      const v = F(F(x[i] * scale) + shift);
      x[i] = v > 0 ? v : 0;
    }
  }
}

function relu(x) {
  for (let i = 0; i < x.length; i++) if (!(x[i] > 0)) x[i] = 0;
}

function resize(src, c, h, w, oh, ow, nearest) {
  // maps (c, h, w) -> (c, oh, ow): torch's interpolate (nearest, or bilinear with
  // align_corners=False: a pixel centre maps to scale (i + 0.5) - 0.5, clamped at 0)
  const out = new Float32Array(c * oh * ow);
  const sy = F(h / oh);
  const sx = F(w / ow);
  const axis = (n, size, scale) => {
    // per output index: [i0, i1, weight of i1]
    const i0 = new Int32Array(n);
    const i1 = new Int32Array(n);
    const l1 = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      if (nearest) {
        i0[i] = i1[i] = Math.min(Math.floor(i * scale), size - 1);
        continue;
      }
      const f = Math.max(0, F(F(scale * (i + 0.5)) - 0.5));
      i0[i] = Math.floor(f);
      i1[i] = i0[i] < size - 1 ? i0[i] + 1 : i0[i];
      l1[i] = F(f - i0[i]);
    }
    return [i0, i1, l1];
  };
  const [y0, y1, ly] = axis(oh, h, sy);
  const [x0, x1, lx] = axis(ow, w, sx);
  for (let ch = 0; ch < c; ch++) {
    const plane = ch * h * w;
    for (let y = 0; y < oh; y++) {
      const a = plane + y0[y] * w;
      const b = plane + y1[y] * w;
      const wy1 = ly[y];
      const wy0 = F(1 - wy1);
      for (let x = 0; x < ow; x++) {
        const wx1 = lx[x];
        const wx0 = F(1 - wx1);
        out[(ch * oh + y) * ow + x] = F(
          wy0 * (wx0 * src[a + x0[x]] + wx1 * src[a + x1[x]])
          + wy1 * (wx0 * src[b + x0[x]] + wx1 * src[b + x1[x]]));
      }
    }
  }
  return out;
}

function warp(maps, c, h, w, flow, fh, fw, cell) {
  // maps (c, h, w) moved by the flow (2, fh, fw), pixels of a (cell fh, cell fw) image:
  // vae/model.py's warp, i.e. torch's grid_sample (bilinear, border, align_corners=False)
  const full = resize(flow, 2, fh, fw, h, w, false);
  const scaleX = F(2 / (cell * fw));
  const scaleY = F(2 / (cell * fh));
  const out = new Float32Array(c * h * w);
  for (let y = 0; y < h; y++) {
    const baseY = F(-1 + (2 * y + 1) / h);
    for (let x = 0; x < w; x++) {
      const baseX = F(-1 + (2 * x + 1) / w);
      const gx = F(baseX - F(full[y * w + x] * scaleX));
      const gy = F(baseY - F(full[h * w + y * w + x] * scaleY));
      // normalised -> pixel coordinates, clipped to the border
      const ix = Math.min(Math.max(F(F(F(gx + 1) * w - 1) / 2), 0), w - 1);
      const iy = Math.min(Math.max(F(F(F(gy + 1) * h - 1) / 2), 0), h - 1);
      const xw = Math.floor(ix);
      const yn = Math.floor(iy);
      const tx = F(ix - xw);
      const ty = F(iy - yn);
      const xe = Math.min(xw + 1, w - 1); // out of range only with weight 0
      const ys = Math.min(yn + 1, h - 1);
      const nw = F(F(1 - tx) * F(1 - ty));
      const ne = F(tx * F(1 - ty));
      const sw = F(F(1 - tx) * ty);
      const se = F(tx * ty);
      for (let ch = 0; ch < c; ch++) {
        const p = ch * h * w;
        out[p + y * w + x] = F(nw * maps[p + yn * w + xw] + ne * maps[p + yn * w + xe]
          + sw * maps[p + ys * w + xw] + se * maps[p + ys * w + xe]);
      }
    }
  }
  return out;
}

function logit(x, eps) {
  const v = F(Math.min(Math.max(x, F(eps)), F(1 - eps)));
  return F(Math.log(F(v / F(1 - v))));
}

function decode(m, kid, code) {
  // one face: code (d numbers) -> 8-bit grey pixels (H W), as Decoder.parts then sigmoid
  const t = m.tensors;
  const [H, W] = m.image_size;
  const [c2, h4, w4] = m.shape;
  const nearest = m.upsample === "nearest";
  const z = Float32Array.from(code, (v) => F(F(v) * F(m.radius)));
  let h = linear(z, t["dense.weight"], t["dense.bias"]);
  relu(h);
  let films = null;
  if (m.kind !== "plain") films = linear(z, t["film.weight"], t["film.bias"]);
  const [wa, wb] = m.widths;
  const k = kid.tensors;
  let ref = m.kind === "plain" ? null : k.reference.data;
  const still = m.still_reference ? ref : null; // still_reference: the reference unmoved
  let half = m.kind === "plain" ? null : k.half.data;
  // stage 4, at 1/4 resolution
  let input = m.kind === "plain" ? h : cat(h, k.quarter.data);
  let cin = input.length / (h4 * w4);
  h = conv3x3(input, cin, h4, w4, t["stage4.weight"], t["stage4.bias"]);
  if (films) filmRelu(h, c2, h4 * w4, films, 0); else relu(h);
  let flow = null;
  if (m.kind === "warp") {
    const raw = conv3x3(h, c2, h4, w4, t["flow.weight"], t["flow.bias"]);
    const shift = F(m.max_shift);
    flow = raw.map((v) => F(shift * F(Math.tanh(v))));
    half = warp(half, k.half.shape[0], H / 2, W / 2, flow, h4, w4, 4);
    ref = warp(ref, 1, H, W, flow, h4, w4, 4);
  }
  // stage 2, at 1/2 resolution
  h = resize(h, c2, h4, w4, H / 2, W / 2, nearest);
  input = half ? cat(h, half) : h;
  cin = input.length / ((H / 2) * (W / 2));
  h = conv3x3(input, cin, H / 2, W / 2, t["stage2.weight"], t["stage2.bias"]);
  const c1 = t["stage2.weight"].shape[0];
  if (films) filmRelu(h, c1, (H / 2) * (W / 2), films, 2 * wa); else relu(h);
  const placed = m.templates_fine ? finePlacement(m, h, c1, flow) : null;
  // stage 1, at full resolution
  h = resize(h, c1, H / 2, W / 2, H, W, nearest);
  input = ref ? cat(h, ref) : h;
  if (still) input = cat(input, still);
  cin = input.length / (H * W);
  h = conv3x3(input, cin, H, W, t["stage1.weight"], t["stage1.bias"]);
  if (films) filmRelu(h, c1, H * W, films, 2 * (wa + wb)); else relu(h);
  const out = conv3x3(h, c1, H, W, t["out.weight"], t["out.bias"]);
  if (m.templates) addTemplates(out, m, z, h, c1, flow, placed);
  const pixels = new Uint8Array(H * W);
  for (let i = 0; i < H * W; i++) {
    const v = ref ? F(out[i] + logit(ref[i], m.eps)) : out[i];
    const p = F(1 / (1 + Math.exp(-v)));
    pixels[i] = Math.min(255, Math.max(0, roundHalfEven(p * 255)));
  }
  return { width: W, height: H, pixels };
}

function finePlacement(m, h, c1, flow) {
  // templates_fine (Decoder.parts): the flow (2, H/4, W/4) resized to 1/2 resolution plus
  // max_shift / 2 * tanh of the template_flow conv of the second stage's features h (c1, H/2,
  // W/2): where the pictures are placed, (2, H/2, W/2), pixels of the full image
  const t = m.tensors;
  const [H, W] = m.image_size;
  const [, h4, w4] = m.shape;
  const up = resize(flow, 2, h4, w4, H / 2, W / 2, false);
  const raw = conv3x3(h, c1, H / 2, W / 2, t["template_flow.weight"], t["template_flow.bias"]);
  const reach = F(m.max_shift / 2);
  return up.map((v, i) => F(v + F(reach * F(Math.tanh(raw[i])))));
}

function unit(x) {
  // x / |x| (torch's F.normalize, eps 1e-12), as float32
  let s = 0;
  for (let i = 0; i < x.length; i++) s += x[i] * x[i];
  const norm = Math.max(F(Math.sqrt(s)), 1e-12);
  return Float32Array.from(x, (v) => F(v / norm));
}

function bumps(z, centres, logKappa) {
  // templates_mix vmf (Decoder.template_weights): template k's weight exp(kappa_k (u . mu_k
  // - 1)) for the code's direction u and the k-th centre's mu_k, centres (k, d)
  const [k, d] = centres.shape;
  const u = unit(z);
  const out = new Float32Array(k);
  for (let j = 0; j < k; j++) {
    const mu = unit(centres.data.subarray(j * d, (j + 1) * d));
    let cosine = 0;
    for (let i = 0; i < d; i++) cosine += u[i] * mu[i];
    const kappa = F(Math.exp(logKappa.data[j]));
    out[j] = F(Math.exp(F(kappa * F(F(cosine) - 1))));
  }
  return out;
}

function addTemplates(out, m, z, h, c1, flow, placed) {
  // the correction's templates (Decoder.parts): the code's mix of the pictures (k, H, W)
  // (a linear layer, or with templates_mix vmf the bumps),
  // moved by the flow (or, with templates_fine, by the finer placement), times 1 + the gain
  // conv of the last features, added to out (H W)
  const t = m.tensors;
  const [H, W] = m.image_size;
  const [, h4, w4] = m.shape;
  const mix = m.templates_mix === "vmf" ? bumps(z, t.centres, t.log_kappa)
    : linear(z, t["mix.weight"], t["mix.bias"]);
  const pictures = t.templates.data;
  const picture = new Float32Array(H * W);
  for (let i = 0; i < H * W; i++) {
    let s = 0;
    for (let k = 0; k < mix.length; k++) s += mix[k] * pictures[k * H * W + i];
    picture[i] = F(s);
  }
  const moved = placed ? warp(picture, 1, H, W, placed, H / 2, W / 2, 2)
    : warp(picture, 1, H, W, flow, h4, w4, 4);
  const gain = conv3x3(h, c1, H, W, t["gain.weight"], t["gain.bias"]);
  for (let i = 0; i < H * W; i++) out[i] = F(out[i] + F(F(1 + gain[i]) * moved[i]));
}

function roundHalfEven(v) {
  // numpy's rint: halves go to the even neighbour
  const r = Math.round(v);
  return Math.abs(v % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

self.onmessage = async (event) => {
  const { id, base, child: kid, code } = event.data;
  try {
    const [m, c] = await Promise.all([model(base), child(base, kid)]);
    if (!Array.isArray(code) || code.length !== m.latent_dim) {
      throw new Error(`a code of ${m.latent_dim} numbers was expected`);
    }
    const { width, height, pixels } = decode(m, c, code);
    self.postMessage({ id, width, height, pixels }, [pixels.buffer]);
  } catch (err) {
    self.postMessage({ id, error: String(err && err.message ? err.message : err) });
  }
};
