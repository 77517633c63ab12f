// Run by test_peer.py in the page (page.evaluate): two of the page's Peers (tube/peer.js)
// played against each other by hand, with the frames between them tampered with, to check
// that a side failing once the keys are confirmed says why (a sealed cancel, then its bye)
// and that before confirmation it says nothing sealed (bye alone). As peer.py and
// tests/relay/peer/test_failures.py.
async () => {
  const { Peer } = await import("tube/peer.js");
  const framing = await import("tube/framing.js");
  const { randomBytes } = await import("tube/bytes.js");
  const pairId = randomBytes(16);
  const fileId = randomBytes(16);
  const kind = (item) => (typeof item === "string" ? item : `0x${item[0].toString(16).padStart(2, "0")}`);

  // S and R, with R's side of the wire passed through `tamper` (frame -> frame) until ready.
  async function confirmed() {
    const s = new Peer("send", new TextEncoder().encode("4821-ahead-zebra"));
    const r = new Peer("recv", new TextEncoder().encode("4821-ahead-zebra"));
    await s.paired(pairId);
    await r.paired(pairId);
    // Shuttle binary frames both ways until both are ready (relay text is dropped).
    for (let round = 0; round < 6; round += 1) {
      for (const frame of s.dataToSend()) if (typeof frame !== "string") await r.receive(frame);
      for (const frame of r.dataToSend()) if (typeof frame !== "string") await s.receive(frame);
    }
    s.events();
    r.events();
    return { s, r };
  }

  const out = {};

  // 1. A DATA chunk altered in transit: R fails with an IntegrityError and sends
  //    [sealed cancel, bye]; S reads the cancel as the receiver's "integrity".
  {
    const { s, r } = await confirmed();
    await s.offer({ fileId, name: "a.bin", size: 300000, type: "", lastModified: 0 });
    for (const f of s.dataToSend()) await r.receive(/** @type {Uint8Array} */ (f));
    r.events();
    await r.acceptOffer();
    for (const f of r.dataToSend()) await s.receive(/** @type {Uint8Array} */ (f));
    s.events();
    await s.sendChunk(0, new Uint8Array(framing.CHUNK_SIZE));
    const [data] = s.dataToSend();
    const tampered = Uint8Array.from(/** @type {Uint8Array} */ (data));
    tampered[100] ^= 1;
    await r.receive(tampered);
    const sent = r.dataToSend();
    out.integrity = {
      receiverState: r.state,
      receiverEvents: r.events().map((e) => [e.type, e.type === "failed" ? e.error.name : null]),
      sent: sent.map(kind),
      bye: sent[1],
    };
    for (const f of sent) if (typeof f !== "string") await s.receive(f);
    out.integrity.senderState = s.state;
    out.integrity.senderEvents = s.events().map((e) => [e.type, e.type === "cancelled" ? e.reason : null]);
    // The cancel is under R's next counter: one accept (counter 0) came before it.
    const keysR = /** @type {any} */ (r)._ownCtrlKey;
    const opener = new framing.CtrlOpener(keysR);
    out.integrity.opened = await opener.open(/** @type {Uint8Array} */ (sent[0])).catch(() => null);
    out.integrity.counter = opener.last;
  }

  // 2. A frame R cannot take in its state (DATA before any offer): a ProtocolViolation, sent
  //    as cancel "protocol".
  {
    const { s, r } = await confirmed();
    await r.receive(Uint8Array.of(framing.DATA, ...new Uint8Array(40)));
    const sent = r.dataToSend();
    out.protocol = { sent: sent.map(kind), bye: sent[1] };
    for (const f of sent) if (typeof f !== "string") await s.receive(f);
    out.protocol.senderEvents = s.events().map((e) => [e.type, e.type === "cancelled" ? e.reason : null]);
  }

  // 3. Before confirmation (a CONFIRM that does not verify): WrongCode, and bye alone.
  {
    const s = new Peer("send", new TextEncoder().encode("4821-ahead-zebra"));
    const r = new Peer("recv", new TextEncoder().encode("4821-ahead-zebra"));
    await s.paired(pairId);
    await r.paired(pairId);
    for (const f of s.dataToSend()) await r.receive(/** @type {Uint8Array} */ (f)); // COMMIT
    for (const f of r.dataToSend()) await s.receive(/** @type {Uint8Array} */ (f)); // CPACE
    const [cpace, confirm] = s.dataToSend();
    await r.receive(/** @type {Uint8Array} */ (cpace));
    r.dataToSend();
    const bad = Uint8Array.from(/** @type {Uint8Array} */ (confirm));
    bad[5] ^= 1;
    await r.receive(bad);
    out.unconfirmed = {
      state: r.state,
      sent: r.dataToSend().map(kind),
      events: r.events().map((e) => [e.type, e.type === "failed" ? e.error.name : null]),
    };
  }
  return out;
}
