// Reads a QR code from the camera preview on the device, so only the token (about 160
// characters) leaves it: the browser's BarcodeDetector where it reads QR codes (Android
// Chrome), otherwise zxing-wasm (the zxing-cpp engine the server reads images with),
// served from this server's /static/ (zxing-wasm.LICENSE) and never from a CDN.

const MAX_FRAME_SIDE = 960; // zxing needs no more to find a permit's QR; fewer pixels, less time
const ZXING_SCRIPT = "/static/zxing-reader.js";

let zxingModule = null;

function loadScript(src) {
  return new Promise((resolve, reject) => {
    const script = document.createElement("script");
    script.src = src;
    script.async = true;
    script.onload = resolve;
    script.onerror = () => reject(new Error(`could not load ${src}`));
    document.head.append(script);
  });
}

async function barcodeDetector() {
  if (typeof globalThis.BarcodeDetector !== "function") return null;
  try {
    const formats = await globalThis.BarcodeDetector.getSupportedFormats();
    if (!formats.includes("qr_code")) return null;
    const detector = new globalThis.BarcodeDetector({ formats: ["qr_code"] });
    return {
      name: "barcode-detector",
      async read(video) {
        if (!video.videoWidth) return null;
        const codes = await detector.detect(video);
        const code = codes.find((c) => c.format === "qr_code" && c.rawValue);
        return code ? code.rawValue : null;
      },
    };
  } catch {
    return null; // a detector that lists formats but cannot start is no detector
  }
}

async function zxingReader() {
  if (typeof WebAssembly !== "object") return null;
  try {
    if (!globalThis.ZXingWASM) await loadScript(ZXING_SCRIPT);
    const zxing = globalThis.ZXingWASM;
    if (!zxingModule) {
      // The package would fetch its .wasm from a CDN by default: point it at this server.
      zxingModule = zxing.prepareZXingModule({
        overrides: { locateFile: (path) => `/static/${path}` },
        fireImmediately: true,
      });
    }
    await zxingModule;
    const canvas = document.createElement("canvas");
    const context = canvas.getContext("2d", { willReadFrequently: true });
    const options = { formats: ["QRCode"], tryHarder: true, maxNumberOfSymbols: 1 };
    return {
      name: "zxing-wasm",
      async read(video) {
        const width = video.videoWidth;
        const height = video.videoHeight;
        if (!width || !height) return null;
        const scale = Math.min(1, MAX_FRAME_SIDE / Math.max(width, height));
        canvas.width = Math.round(width * scale);
        canvas.height = Math.round(height * scale);
        context.drawImage(video, 0, 0, canvas.width, canvas.height);
        const pixels = context.getImageData(0, 0, canvas.width, canvas.height);
        const results = await zxing.readBarcodes(pixels, options);
        const result = results.find((r) => r.isValid && r.text);
        return result ? result.text : null;
      },
    };
  } catch {
    return null;
  }
}

// The best reader this browser has, or null when neither can run (then the page falls back
// to sending frames to POST /v1/scan, the route kept for image-only clients).
export async function createReader() {
  return (await barcodeDetector()) || (await zxingReader());
}
