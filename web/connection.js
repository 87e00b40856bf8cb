// One RTCPeerConnection to the remote peer: docs/NEGOTIATION.md's "pc", which
// the page numbers as generations 1, 2, 3, … (never on the wire). It owns the
// browser object, its data channel "tether" (§3: both sides create it when
// they build the pc, negotiated out of band as stream 0, unordered and fully
// reliable; nothing announced in-band is ours), its candidates (§12) and
// the negotiation state that belongs to it (the offer outstanding on it, the
// offer last applied to it, the answer last sent). What to negotiate, and
// when, is peer.js's: a Connection only reports (through `hooks`, and only
// until it is closed, so nothing of a retired pc is ever applied).

/** The data channel's label (§3). */
export const CHANNEL_LABEL = 'tether';
/**
 * The data channel's options (§3): negotiated out of band on SCTP stream 0,
 * so that both sides create it and neither announces it; unordered, so that
 * a message lost below SCTP (into a dead path) holds nothing else up, since
 * the reliable stream above orders (reliable.js); fully reliable (no
 * maxRetransmits nor maxPacketLifeTime).
 * @type {RTCDataChannelInit}
 */
export const CHANNEL_OPTIONS = Object.freeze({ negotiated: true, id: 0, ordered: false });
/** At most this many remote candidates wait for a remote description; older ones are dropped (§12). */
const MAX_BUFFERED_CANDIDATES = 64;

/**
 * The offer outstanding on a pc (offerer), §1 "Outstanding offer".
 * @typedef {object} Outstanding
 * @property {import('./sdp.js').OfferId} offer
 * @property {boolean} restart  an ICE-restart offer
 * @property {string} sdp       the offer as created (untagged)
 * @property {ReturnType<typeof setTimeout>} timer  the answer wait
 */

/**
 * @typedef {object} ConnectionHooks
 * @property {(payload: {type: string} & Record<string, unknown>) => void} candidate  a local candidate to relay
 * @property {(conn: Connection) => void} state              the connection state changed
 * @property {(conn: Connection) => void} change             anything shown changed
 * @property {(conn: Connection, channel: RTCDataChannel) => void} channelOpen
 * @property {(conn: Connection) => void} channelClosed
 */

export class Connection {
  /**
   * @param {object} options
   * @param {number} options.id
   * @param {RTCIceServer[]} options.iceServers
   * @param {RTCIceTransportPolicy} [options.iceTransportPolicy]  'relay': TURN candidates only
   * @param {ConnectionHooks} options.hooks
   * @param {(line: string) => void} options.log
   */
  constructor(options) {
    this.id = options.id;
    this.hooks = options.hooks;
    this.log = options.log;
    this.pc = new RTCPeerConnection({
      iceServers: options.iceServers,
      iceTransportPolicy: options.iceTransportPolicy ?? 'all',
    });
    /** 'connecting' | 'connected' | 'disconnected' | 'failed' | 'closed' */
    this.state = 'connecting';
    this.closed = false;
    /** @type {Outstanding | null} offerer: the offer waiting for its answer */
    this.negotiation = null;
    this.remoteDescriptionSet = false;
    /** @type {string | null} the remote description last applied, as the remote stack wrote it */
    this.remoteSdpText = null;
    /** @type {import('./sdp.js').OfferId | null} answerer: the last offer applied */
    this.remoteOffer = null;
    /** @type {string | null} answerer: the last answer sent, as sent */
    this.lastAnswer = null;
    /** @type {RTCDataChannel | null} */
    this.channel = null;
    this.channelOpen = false;
    /** an ICE restart was applied and has not completed yet */
    this.restartApplied = false;
    /** Data and Ack frames wait in the replay buffer (an ICE restart is under way; peer.js holdData) */
    this.dataHeld = false;
    /** @type {RTCIceCandidateInit[]} remote candidates waiting for a remote description */
    this.buffered = [];
    this.wire();
    // The offerer's offer then has the m=application section; the answerer's
    // channel is there before it applies the offer.
    this.watchChannel(this.pc.createDataChannel(CHANNEL_LABEL, { ...CHANNEL_OPTIONS }));
  }

  wire() {
    const pc = this.pc;
    let endSent = false;
    pc.onicecandidate = (event) => {
      if (this.closed) return;
      const candidate = event.candidate;
      if (!candidate || !candidate.candidate) {
        // End of candidates, once per gathering.
        if (endSent) return;
        endSent = true;
        this.hooks.candidate({ type: 'candidate', candidate: '', sdp_mid: null, sdp_mline_index: null });
        return;
      }
      endSent = false;
      this.hooks.candidate({
        type: 'candidate',
        candidate: candidate.candidate,
        sdp_mid: candidate.sdpMid ?? null,
        sdp_mline_index: candidate.sdpMLineIndex ?? null,
      });
    };
    pc.onicegatheringstatechange = () => {
      if (!this.closed && pc.iceGatheringState === 'gathering') endSent = false;
    };
    pc.onconnectionstatechange = () => {
      if (this.closed) return;
      const state = pc.connectionState === 'new' ? 'connecting' : pc.connectionState;
      if (state === this.state) return;
      this.state = state;
      this.log(`peer: peer connection ${this.id} ${state}`);
      this.hooks.state(this);
    };
    pc.oniceconnectionstatechange = () => {
      if (!this.closed) this.hooks.change(this);
    };
    pc.ondatachannel = (event) => {
      // Our channel is negotiated out of band: nothing announced in-band is
      // ours, whatever its label (§3, P8).
      this.log(`peer: closed a data channel announced in-band (label ${JSON.stringify(event.channel.label)})`);
      try {
        event.channel.close();
      } catch {
        // Closing it is a courtesy.
      }
    };
  }

  /** @param {RTCDataChannel} channel */
  watchChannel(channel) {
    channel.binaryType = 'arraybuffer';
    this.channel = channel;
    const opened = () => {
      if (this.closed || this.channel !== channel || this.channelOpen) return;
      this.channelOpen = true;
      this.log(`peer: data channel of peer connection ${this.id} open`);
      this.hooks.channelOpen(this, channel);
    };
    channel.onopen = opened;
    channel.onclose = () => {
      if (this.channel !== channel || !this.channelOpen) return;
      this.channelOpen = false;
      this.log(`peer: data channel of peer connection ${this.id} closed`);
      this.hooks.channelClosed(this);
    };
    if (channel.readyState === 'open') opened();
  }

  /** Whether the pc exists and is neither failed nor closed (§1 "Usable"). */
  usable() {
    return !this.closed && this.state !== 'failed' && this.state !== 'closed';
  }

  /**
   * Closes the pc for good; late callbacks are ignored from now on.
   * @param {'closed' | 'failed'} state
   * @returns {boolean} whether its channel was open
   */
  close(state) {
    this.closed = true;
    if (this.negotiation) clearTimeout(this.negotiation.timer);
    this.negotiation = null;
    this.state = state;
    const wasOpen = this.channelOpen;
    this.channelOpen = false;
    this.channel = null;
    this.buffered = [];
    const pc = this.pc;
    pc.onicecandidate = pc.onconnectionstatechange = pc.oniceconnectionstatechange = null;
    pc.ondatachannel = pc.onicegatheringstatechange = null;
    try {
      pc.close();
    } catch {
      // Closing twice is fine.
    }
    return wasOpen;
  }

  /**
   * The remote description applied, as the remote stack wrote it (without
   * tether's attributes), if any. Kept as received: the browser's own
   * `remoteDescription` is re-serialised and may list fewer fingerprints.
   */
  remoteSdp() {
    return this.remoteSdpText;
  }

  /** Applies a remote description. @param {'offer' | 'answer'} type @param {string} sdp */
  async applyRemote(type, sdp) {
    await this.pc.setRemoteDescription({ type, sdp });
    this.remoteDescriptionSet = true;
    this.remoteSdpText = sdp;
  }

  /** The local ICE username fragment of the current local description, if any. */
  localUfrag() {
    return /a=ice-ufrag:(\S+)/.exec(this.pc.localDescription?.sdp ?? '')?.[1] ?? null;
  }

  // ----- remote candidates (§12) -------------------------------------------

  /** Adds a remote candidate now, or after the remote description. @param {RTCIceCandidateInit} init */
  async addRemoteCandidate(init) {
    if (this.remoteDescriptionSet) {
      await this.addNow(init);
      return;
    }
    if (this.buffered.some((b) => b.candidate === init.candidate)) return;
    if (this.buffered.length === MAX_BUFFERED_CANDIDATES) this.buffered.shift();
    this.buffered.push(init);
  }

  /** Adds the candidates that waited for the remote description. */
  async flushCandidates() {
    while (!this.closed && this.buffered.length > 0) {
      const init = /** @type {RTCIceCandidateInit} */ (this.buffered.shift());
      await this.addNow(init);
    }
  }

  /** @param {RTCIceCandidateInit} init */
  async addNow(init) {
    try {
      await this.pc.addIceCandidate(init);
    } catch (error) {
      // A candidate of an older pc or ICE generation: logged and ignored.
      this.log(`peer: remote candidate refused: ${/** @type {Error} */ (error).message} (${init.candidate})`);
    }
  }

  // ----- ICE diagnosis -----------------------------------------------------

  /**
   * Whether ICE has a working pair of the ICE generation whose local username
   * fragment is `ufrag`: a succeeded candidate pair (checks answered with the
   * new credentials) whose local candidate has that fragment. Undefined when
   * the browser's stats do not say. (The controlled side may keep reporting the
   * old pair as selected, and see no nomination, while the old pair still
   * works, so neither can tell.)
   * @param {string} ufrag
   * @returns {Promise<boolean | undefined>}
   */
  async hasWorkingPair(ufrag) {
    let report;
    try {
      report = await this.pc.getStats();
    } catch {
      return undefined;
    }
    let known = false;
    let found = false;
    report.forEach((/** @type {any} */ stat) => {
      if (stat.type !== 'candidate-pair') return;
      const local = report.get(stat.localCandidateId);
      if (typeof local?.usernameFragment !== 'string') return;
      known = true;
      if (local.usernameFragment === ufrag && stat.state === 'succeeded') found = true;
    });
    return known ? found : undefined;
  }

  /** The candidate pairs (for diagnosis). */
  async icePairs() {
    const report = await this.pc.getStats();
    /** @type {string[]} */
    const pairs = [];
    report.forEach((/** @type {any} */ stat) => {
      if (stat.type !== 'candidate-pair') return;
      const local = report.get(stat.localCandidateId);
      const remote = report.get(stat.remoteCandidateId);
      pairs.push(`${local?.usernameFragment} ${local?.address}:${local?.port} -> ${remote?.address}:${remote?.port} ${stat.state}${stat.nominated ? ' nominated' : ''}`);
    });
    return pairs;
  }
}
