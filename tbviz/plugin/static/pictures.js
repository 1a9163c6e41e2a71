// tbviz's pictures in the page: how large each is drawn, and their values read back.
//
// Part of the viewer (viewer.js uses it; see there where it runs): plain JavaScript
// that runs as a classic script or as an ES module, adding to globalThis.tbvizViewer.
//
// A tbviz picture is an 8-bit palette PNG whose indices are the normalised values
// (tbviz.io.tags: index i < LEVELS is i / (LEVELS - 1), then the separator and the
// NaN/Inf marker). The difference picture of the compare view is computed here from
// those indices, read exactly from the PNG's bytes, the same in every viewer.
(() => {
  "use strict";

  const MIN_DISPLAY = 96;      // px: a small layer's picture is enlarged to at least this
  const MAX_FACTOR = 24;       // nor more than this many times
  const LEVELS = 254;          // palette indices below this are values i / (LEVELS - 1)
  const NONFINITE_INDEX = 255;

  // How a picture is shown: an integer enlargement (pixelated) that fills `size`, at least
  // MIN_DISPLAY px for a small layer; a picture larger than `size` is shrunk to fit (one up
  // to a quarter larger is shown as logged: shrinking it a little would only blur it).
  function displaySize(width, height, size) {
    const longest = Math.max(width, height, 1);
    let factor = size / longest;
    if (factor >= 0.8 || longest < MIN_DISPLAY) {
      factor = Math.min(MAX_FACTOR, Math.max(Math.floor(factor), Math.ceil(MIN_DISPLAY / longest)));
    }
    return {width: Math.max(1, Math.round(width * factor)), height: Math.max(1, Math.round(height * factor)), factor};
  }

  // ---------------------------------------------------------------- reading pictures back

  function loadImage(url) {
    return new Promise((resolve, reject) => {
      const image = new Image();
      image.onload = () => resolve(image);
      image.onerror = () => reject(new Error("not loaded"));
      image.src = url;
    });
  }

  function pixels(image) {
    const canvas = document.createElement("canvas");
    canvas.width = image.naturalWidth;
    canvas.height = image.naturalHeight;
    const context = canvas.getContext("2d", {willReadFrequently: true});
    context.drawImage(image, 0, 0);
    return context.getImageData(0, 0, canvas.width, canvas.height);
  }

  // The bytes behind a picture's URL (a data: URL is decoded here: no request at all).
  async function pictureBytes(url) {
    if (url.startsWith("data:")) {
      const text = atob(url.slice(url.indexOf(",") + 1));
      const bytes = new Uint8Array(text.length);
      for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
      return bytes;
    }
    const response = await fetch(url);
    if (!response.ok) throw new Error("not loaded");
    return new Uint8Array(await response.arrayBuffer());
  }

  // The palette indices of an 8-bit, non-interlaced palette PNG (tbviz's pictures), read
  // exactly: {width, height, indices}; null for any other PNG.
  async function paletteIndices(bytes) {
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    let width = 0, height = 0, offset = 8;
    const parts = [];
    while (offset + 8 <= bytes.length) {
      const length = view.getUint32(offset);
      const type = String.fromCharCode(...bytes.subarray(offset + 4, offset + 8));
      const data = bytes.subarray(offset + 8, offset + 8 + length);
      if (type === "IHDR") {
        width = view.getUint32(offset + 8);
        height = view.getUint32(offset + 12);
        if (data[8] !== 8 || data[9] !== 3 || data[12] !== 0) return null;  // depth, colour type, interlace
      } else if (type === "IDAT") {
        parts.push(data);
      }
      offset += 12 + length;
    }
    if (!width || !parts.length || typeof DecompressionStream === "undefined") return null;
    const inflated = new Uint8Array(await new Response(new Blob(parts).stream().pipeThrough(new DecompressionStream("deflate"))).arrayBuffer());
    const indices = new Uint8Array(width * height);
    for (let y = 0; y < height; y++) {
      const filter = inflated[y * (width + 1)];
      const row = inflated.subarray(y * (width + 1) + 1, (y + 1) * (width + 1));
      const out = indices.subarray(y * width, (y + 1) * width);
      const up = y > 0 ? indices.subarray((y - 1) * width, y * width) : new Uint8Array(width);
      for (let x = 0; x < width; x++) {
        const a = x > 0 ? out[x - 1] : 0, b = up[x], c = x > 0 ? up[x - 1] : 0;
        let predictor = 0;
        if (filter === 1) predictor = a;
        else if (filter === 2) predictor = b;
        else if (filter === 3) predictor = (a + b) >> 1;
        else if (filter === 4) {
          const p = a + b - c, pa = Math.abs(p - a), pb = Math.abs(p - b), pc = Math.abs(p - c);
          predictor = pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
        }
        out[x] = (row[x] + predictor) & 255;
      }
    }
    return {width, height, indices};
  }

  // A picture's normalised values in [0, 1], which pixels are real (not a separator, not
  // NaN/Inf) and which are NaN/Inf. A tbviz palette PNG's indices are its values (index
  // i < LEVELS is i / (LEVELS - 1): tbviz.io.tags); any other picture (a colour image)
  // counts by its grey level.
  async function values(url) {
    const bytes = await pictureBytes(url);
    const decoded = await paletteIndices(bytes).catch(() => null);
    if (decoded) {
      const count = decoded.width * decoded.height;
      const value = new Float32Array(count), real = new Uint8Array(count), nonfinite = new Uint8Array(count);
      for (let i = 0; i < count; i++) {
        const index = decoded.indices[i];
        if (index < LEVELS) {
          value[i] = index / (LEVELS - 1);
          real[i] = 1;
        } else {
          nonfinite[i] = index === NONFINITE_INDEX ? 1 : 0;
        }
      }
      return {value, real, nonfinite, width: decoded.width, height: decoded.height};
    }
    const data = pixels(await loadImage(url));
    const count = data.width * data.height;
    const value = new Float32Array(count);
    for (let i = 0; i < count; i++) value[i] = (data.data[4 * i] + data.data[4 * i + 1] + data.data[4 * i + 2]) / 765;
    return {value, real: new Uint8Array(count).fill(1), nonfinite: new Uint8Array(count), width: data.width, height: data.height};
  }

  // The difference picture B − A of two logged pictures, on its own range: {url, range (the
  // 99th percentile of |B − A|: ±range are the ramp's ends), max, mean (of |B − A|), width,
  // height}, over the pixels real in both (not separators, not NaN/Inf).
  async function difference(urlA, urlB, colours) {
    const [a, b] = await Promise.all([values(urlA), values(urlB)]);
    if (a.width !== b.width || a.height !== b.height) {
      throw new Error(`cannot compare: the pictures differ in size (A ${a.width}×${a.height}, B ${b.width}×${b.height} pixels): the layer was pictured with other settings`);
    }
    const count = a.width * a.height;
    const delta = new Float32Array(count);
    const magnitudes = [];
    let sum = 0;
    for (let i = 0; i < count; i++) {
      if (a.real[i] && b.real[i]) {
        delta[i] = b.value[i] - a.value[i];
        magnitudes.push(Math.abs(delta[i]));
        sum += Math.abs(delta[i]);
      }
    }
    // Its own range: the 99th percentile of |B − A| (a few extreme pixels beyond it are drawn
    // at full colour), so that a change spread over the picture shows, not only the largest.
    magnitudes.sort((x, y) => x - y);
    const real = magnitudes.length;
    const top = real ? magnitudes[real - 1] : 0;
    const range = real ? magnitudes[Math.min(real - 1, Math.floor(0.99 * real))] || top : 0;
    const canvas = document.createElement("canvas");
    canvas.width = a.width;
    canvas.height = a.height;
    const context = canvas.getContext("2d");
    const out = context.createImageData(a.width, a.height);
    const ramp = colours.palette.map((hex) => parseInt(hex.slice(1), 16));
    const middle = (ramp.length - 1) / 2;
    const separator = parseInt(colours.separator.slice(1), 16);
    const magenta = parseInt(colours.nonfinite.slice(1), 16);
    for (let i = 0; i < count; i++) {
      let rgb;
      if (a.nonfinite[i] || b.nonfinite[i]) rgb = magenta;
      else if (!(a.real[i] && b.real[i])) rgb = separator;
      else rgb = ramp[Math.round(middle + (range > 0 ? Math.max(-1, Math.min(1, delta[i] / range)) * middle : 0))];
      out.data[4 * i] = rgb >> 16;
      out.data[4 * i + 1] = (rgb >> 8) & 255;
      out.data[4 * i + 2] = rgb & 255;
      out.data[4 * i + 3] = 255;
    }
    context.putImageData(out, 0, 0);
    return {url: canvas.toDataURL("image/png"), range, max: top, mean: real ? sum / real : 0, width: a.width, height: a.height};
  }

  Object.assign((globalThis.tbvizViewer ??= {}), {displaySize, difference});
})();
