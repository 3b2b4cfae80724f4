// The picture -> model input step of presets.eval_transform, re-done in the browser so the page's
// answers equal `predict`'s: resize the shorter side to round(size / crop_pct) with antialiasing,
// centre crop, scale to 0..1, normalise. A canvas resize would not match (its filters differ), so the
// resize is PyTorch's own uint8 path (torch.nn.functional.interpolate with antialias=True on uint8,
// which torchvision takes for bilinear and bicubic on the CPU): Pillow-style separable convolution,
// weights rounded to int16 fixed point, horizontal pass then vertical, each rounded to uint8.

function cubic(x) {  // Keys' cubic convolution, a = -0.5 (PyTorch's and Pillow's antialias filter)
  const a = -0.5;
  x = Math.abs(x);
  if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
  if (x < 2) return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a;
  return 0;
}

function triangle(x) {
  x = Math.abs(x);
  return x < 1 ? 1 - x : 0;
}

// Output size of torchvision's Resize(int): the shorter side becomes `short`, the longer one is truncated.
export function resizedSize(w, h, short) {
  if (w <= h) return [short, Math.trunc(short * h / w)];
  return [Math.trunc(short * w / h), short];
}

// Per output index: first input index, count and int16 weights (PyTorch's
// _compute_index_ranges_int16_weights with antialias=True, align_corners=False).
export function weights(inSize, outSize, mode) {
  const scale = inSize / outSize;
  const interpSize = mode === "bicubic" ? 4 : 2;
  const filter = mode === "bicubic" ? cubic : triangle;
  const support = scale >= 1 ? interpSize * 0.5 * scale : interpSize * 0.5;
  const maxSize = Math.ceil(support) * 2 + 1;
  const invscale = scale >= 1 ? 1 / scale : 1;
  const xmin = new Int32Array(outSize), xsize = new Int32Array(outSize);
  const w = new Float64Array(outSize * maxSize);
  let wtMax = 0;
  for (let i = 0; i < outSize; i++) {
    const center = scale * (i + 0.5);
    const lo = Math.max(Math.trunc(center - support + 0.5), 0);
    const n = Math.min(Math.max(Math.min(Math.trunc(center + support + 0.5), inSize) - lo, 0), maxSize);
    xmin[i] = lo;
    xsize[i] = n;
    let total = 0;
    for (let j = 0; j < n; j++) {
      const v = filter((j + lo - center + 0.5) * invscale);
      w[i * maxSize + j] = v;
      total += v;
    }
    if (total !== 0) {
      for (let j = 0; j < n; j++) {
        w[i * maxSize + j] /= total;
        wtMax = Math.max(wtMax, w[i * maxSize + j]);
      }
    }
  }
  let precision = 0;
  for (; precision < 22; precision++) {
    if (Math.trunc(0.5 + wtMax * 2 ** (precision + 1)) >= 1 << 15) break;
  }
  const k = new Int32Array(outSize * maxSize);
  for (let i = 0; i < k.length; i++) {
    const v = w[i] * 2 ** precision;
    k[i] = v < 0 ? Math.trunc(-0.5 + v) : Math.trunc(0.5 + v);
  }
  return { xmin, xsize, k, maxSize, precision };
}

const clamp8 = (v) => (v < 0 ? 0 : v > 255 ? 255 : v);

// RGB planes (3 x h x w uint8) -> resized along x
function horizontal(src, w, h, outW, mode) {
  const { xmin, xsize, k, maxSize, precision } = weights(w, outW, mode);
  const out = new Uint8Array(3 * h * outW);
  const half = 1 << (precision - 1);
  for (let c = 0; c < 3; c++) {
    for (let y = 0; y < h; y++) {
      const row = c * h * w + y * w, orow = c * h * outW + y * outW;
      for (let x = 0; x < outW; x++) {
        let acc = half;
        const lo = xmin[x], n = xsize[x], kb = x * maxSize;
        for (let j = 0; j < n; j++) acc += src[row + lo + j] * k[kb + j];
        out[orow + x] = clamp8(acc >> precision);
      }
    }
  }
  return out;
}

function vertical(src, w, h, outH, mode) {
  const { xmin, xsize, k, maxSize, precision } = weights(h, outH, mode);
  const out = new Uint8Array(3 * outH * w);
  const half = 1 << (precision - 1);
  for (let c = 0; c < 3; c++) {
    for (let y = 0; y < outH; y++) {
      const lo = xmin[y], n = xsize[y], kb = y * maxSize, orow = c * outH * w + y * w;
      for (let x = 0; x < w; x++) {
        let acc = half;
        for (let j = 0; j < n; j++) acc += src[c * h * w + (lo + j) * w + x] * k[kb + j];
        out[orow + x] = clamp8(acc >> precision);
      }
    }
  }
  return out;
}

// RGBA pixels (canvas ImageData layout, alpha already composited) -> RGB planes
export function planes(rgba, w, h) {
  const n = w * h, out = new Uint8Array(3 * n);
  for (let i = 0; i < n; i++) {
    out[i] = rgba[4 * i];
    out[n + i] = rgba[4 * i + 1];
    out[2 * n + i] = rgba[4 * i + 2];
  }
  return out;
}

// RGB planes -> resized planes (torchvision Resize(short, antialias=True) on a uint8 tensor)
export function resize(src, w, h, outW, outH, mode) {
  let cur = src;
  if (outW !== w) cur = horizontal(cur, w, h, outW, mode);
  if (outH !== h) cur = vertical(cur, outW, h, outH, mode);
  return cur;
}

const pyRound = (x) => {  // Python's round(): halves go to the even neighbour
  const f = Math.floor(x), d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
};

// RGBA pixels of the decoded picture -> Float32Array (3 x size x size), normalised, as eval_transform
export function toInput(rgba, w, h, pre) {
  const short = pyRound(pre.size / (pre.crop_pct ?? 0.875));  // presets.resize_size
  const [rw, rh] = resizedSize(w, h, short);
  const px = resize(planes(rgba, w, h), w, h, rw, rh, pre.interpolation);
  const s = pre.size;
  const top = pyRound((rh - s) / 2), left = pyRound((rw - s) / 2);
  const out = new Float32Array(3 * s * s);
  for (let c = 0; c < 3; c++) {
    // ToDtype(scale=True) then Normalize, in float32 as torch does
    const m = Math.fround(pre.mean[c]), sd = Math.fround(pre.std[c]);
    for (let y = 0; y < s; y++) {
      for (let x = 0; x < s; x++) {
        const v = Math.fround(px[c * rw * rh + (top + y) * rw + left + x] / 255);
        out[c * s * s + y * s + x] = Math.fround(Math.fround(v - m) / sd);
      }
    }
  }
  return out;
}
