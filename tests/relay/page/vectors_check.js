// Run by test_crypto.py in the page (page.evaluate): every computation the vectors pin,
// by the page's own modules imported through its import map; results as hex.
async ([draft, low, tube]) => {
  const bytes = await import("tube/bytes.js");
  const cpace = await import("tube/cpace.js");
  const keys = await import("tube/keys.js");
  const framing = await import("tube/framing.js");
  const { fromHex: h, toHex: x, utf8 } = bytes;
  const out = {};

  // The draft's G_X25519 run: a initiator, b responder.
  const sa = await cpace.importScalar(h(draft.ya));
  const sb = await cpace.importScalar(h(draft.yb));
  const g = await cpace.calculateGenerator(h(draft.PRS), h(draft.CI), h(draft.sid));
  out.g = x(g);
  out.Ya = x(await cpace.scalarMultVfy(sa, g));
  out.Yb = x(await cpace.scalarMultVfy(sb, g));
  out.K = x(await cpace.scalarMultVfy(sa, h(draft.Yb)));
  out.K_b = x(await cpace.scalarMultVfy(sb, h(draft.Ya)));
  const ma = cpace.lvCat(h(draft.Ya), h(draft.ADa));
  const mb = cpace.lvCat(h(draft.Yb), h(draft.ADb));
  const prefix = cpace.lvCat(utf8("CPace255_ISK"), h(draft.sid), h(draft.K));
  const isk = async (tail) => x(new Uint8Array(await crypto.subtle.digest(
    "SHA-512", bytes.concat(prefix, tail))));
  out.ISK_IR = await isk(bytes.concat(ma, mb));
  // Symmetric order: the larger message first (the draft's o_cat), not used by Tube.
  const greater = x(ma) > x(mb);
  out.ISK_SY = await isk(bytes.concat(utf8("oc"), greater ? ma : mb, greater ? mb : ma));

  // Low-order points: the abort is WrongCode, whatever Chromium does.
  const s = await cpace.importScalar(h(low.s));
  out.low = {};
  for (const [name, point] of Object.entries(low.points)) {
    try {
      out.low[name] = x(await cpace.scalarMultVfy(s, h(point)));
    } catch (error) {
      out.low[name] = error.name;
    }
  }

  // Tube's two CPace runs, through the CPace class (both roles).
  out.cpace = {};
  for (const [kind, v] of Object.entries(tube.cpace)) {
    const prs = h(v.prs_hex), sid = h(v.sid);
    const S = await cpace.CPace.start(prs, sid, "send", {scalar: await cpace.importScalar(h(v.scalar_s))});
    const R = await cpace.CPace.start(prs, sid, "recv", {scalar: await cpace.importScalar(h(v.scalar_r))});
    const iskS = await S.finish(R.message);
    const iskR = await R.finish(S.message);
    out.cpace[kind] = {
      generator_string: x(cpace.generatorString(prs, h(v.ci), sid)),
      g: x(await cpace.calculateGenerator(prs, h(v.ci), sid)),
      message_s: x(S.message), message_r: x(R.message),
      transcript: x(S.transcript), transcript_r: x(R.transcript),
      isk: x(iskS), isk_r: x(iskR),
    };
  }

  // Key schedule, commitment, CONFIRM tags.
  const k = await keys.deriveKeys(h(tube.keys.isk), h(tube.keys.sid), true);
  out.keys = Object.fromEntries(Object.entries(k.raw).map(([n, b]) => [n, x(b)]));
  out.keys.prk = x(await keys.hkdfExtract(h(tube.keys.sid), h(tube.keys.isk)));
  out.keys.verifier = k.verifier;
  out.commitment = x(await keys.commitment(h(tube.commitment.message_s)));
  out.tag_s = x(await keys.confirmTag(k.confirmS, h(tube.confirm.transcript)));
  out.tag_r = x(await keys.confirmTag(k.confirmR, h(tube.confirm.transcript)));
  out.confirm_ok = true;
  await keys.checkConfirm(k.confirmR, h(tube.confirm.transcript), h(tube.confirm.tag_r));
  try {
    await keys.checkConfirm(k.confirmR, h(tube.confirm.transcript), h(tube.confirm.tag_s));
    out.confirm_ok = false;
  } catch (error) { out.wrong_tag = error.name; }
  const f = tube.file_id;
  out.file_id = x(await keys.fileId(h(f.salt), f.name, f.size, f.last_modified_ms));

  // The data key, checked through what it seals (WebCrypto keys are not extractable).
  const d = tube.data_key;
  const dataKey = await k.dataKey(h(d.file_id), d.epoch, h(d.stream_nonce));
  out.aad = tube.data_aad.map((a) => x(framing.dataAad(h(a.file_id), a.epoch, a.index, a.final, a.total_size)));
  const c = tube.chunks;
  const content = new Uint8Array(c.total_size);
  for (let o = 0; o < content.length; o++) content[o] = o % 251;
  const full = await framing.sealChunk(dataKey, h(c.file_id), c.epoch, 0, c.total_size, content.subarray(0, 262144));
  out.full = {length: full.length, sha256: x(new Uint8Array(await crypto.subtle.digest("SHA-256", full))),
              head: x(full.subarray(0, 64))};
  out.final = x(await framing.sealChunk(dataKey, h(c.file_id), c.epoch, 1, c.total_size, content.subarray(262144)));
  out.empty = x(await framing.sealChunk(dataKey, h(c.file_id), c.epoch, 0, 0, new Uint8Array(0)));
  // ...and opened again, in order, by the receiver's opener.
  const opener = new framing.ChunkOpener(dataKey, h(c.file_id), c.epoch, c.total_size);
  out.opened = [(await opener.open(full)).length, x(await opener.open(h(c.final.frame))), opener.done];

  // Sealed control messages, and opened again.
  out.ctrl = [];
  for (const m of tube.ctrl) {
    const key = await crypto.subtle.importKey("raw", h(m.key), "AES-GCM", false, ["encrypt", "decrypt"]);
    const frame = await framing.sealCtrl(key, m.counter, m.json);
    const back = await new framing.CtrlOpener(key).open(frame);
    out.ctrl.push({plaintext: x(framing.ctrlPlaintext(m.json)), frame: x(frame), back});
  }
  return out;
}
