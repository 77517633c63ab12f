// @ts-check
import { hasX25519 } from "tube/cpace.js";
hasX25519().then((ok) => document.body.setAttribute("data-x25519", String(ok)));
