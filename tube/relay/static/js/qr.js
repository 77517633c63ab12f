// @ts-check
/**
 * The link as a QR code, drawn as an SVG: one `<path>` of the dark modules, built with DOM
 * calls (no inline style or markup, so the page's CSP needs nothing more). The symbol comes
 * from the vendored encoder (`static/vendor/qrcodegen.js`, Project Nayuki's QR Code generator,
 * MIT; its README.md says where it came from and its hash) at error correction level M, with
 * the 4-module quiet zone the standard asks for around it.
 * @module
 */

import qrcodegen from "tube/vendor/qrcodegen.js";

const SVG = "http://www.w3.org/2000/svg";
/** Light modules around the symbol (ISO/IEC 18004: at least 4). */
export const QUIET_ZONE = 4;

/**
 * The dark modules of `text`'s QR code, row by row (true = dark).
 * @param {string} text
 * @returns {boolean[][]}
 */
export function qrModules(text) {
  const code = qrcodegen.QrCode.encodeText(text, qrcodegen.QrCode.Ecc.MEDIUM);
  return Array.from({ length: code.size }, (_, y) =>
    Array.from({ length: code.size }, (_, x) => code.getModule(x, y)),
  );
}

/**
 * An `<svg>` of `text`'s QR code: one unit per module, quiet zone included, scaled by CSS.
 * @param {string} text
 * @param {string} label what the picture is, for screen readers
 * @returns {SVGSVGElement}
 */
export function qrSvg(text, label) {
  const modules = qrModules(text);
  const side = modules.length + 2 * QUIET_ZONE;
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${side} ${side}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", label);
  svg.setAttribute("shape-rendering", "crispEdges");
  svg.dataset.modules = String(modules.length);
  const background = document.createElementNS(SVG, "rect");
  background.setAttribute("width", String(side));
  background.setAttribute("height", String(side));
  background.setAttribute("fill", "#fff");
  const path = document.createElementNS(SVG, "path");
  const parts = [];
  for (const [y, row] of modules.entries()) {
    for (const [x, dark] of row.entries()) {
      if (dark) parts.push(`M${x + QUIET_ZONE},${y + QUIET_ZONE}h1v1h-1z`);
    }
  }
  path.setAttribute("d", parts.join(""));
  path.setAttribute("fill", "#000");
  svg.append(background, path);
  return svg;
}
