// The page: connection state, the message log, a send box, the event log.
// Only DOM here; app.js decides what to show.

const MAX_EVENTS = 500;

/** @param {string} id */
function el(id) {
  const node = document.getElementById(id);
  if (!node) throw new Error(`#${id} is missing from the page`);
  return node;
}

/**
 * The join form, for a page opened without ?peer=…&to=….
 * @param {URLSearchParams} params
 */
export function showJoinForm(params) {
  const form = /** @type {HTMLFormElement} */ (el('join'));
  form.hidden = false;
  for (const name of ['peer', 'to', 'room', 'token']) {
    const input = /** @type {HTMLInputElement | null} */ (form.elements.namedItem(name));
    const value = params.get(name);
    if (input && value) input.value = value;
  }
  setBadge('idle', 'not joined');
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const next = new URLSearchParams(params);
    for (const [name, value] of new FormData(form)) {
      if (typeof value === 'string' && value !== '') next.set(name, value);
      else next.delete(name);
    }
    location.search = next.toString();
  });
}

/** @param {string} state @param {string} text */
export function setBadge(state, text) {
  const badge = el('badge');
  badge.dataset.state = state;
  badge.textContent = text;
}

/**
 * @param {{onSend: (text: string) => void}} handlers
 */
export function createSessionView(handlers) {
  el('session').hidden = false;
  const messages = el('messages');
  const events = el('events');
  const input = /** @type {HTMLInputElement} */ (el('text'));
  el('send').addEventListener('submit', (event) => {
    event.preventDefault();
    const text = input.value;
    if (text === '') return;
    input.value = '';
    handlers.onSend(text);
  });
  /** @type {Map<number, HTMLElement>} */
  const outgoing = new Map();

  return {
    /** @param {Record<string, string>} fields */
    setStatus(fields) {
      for (const [key, value] of Object.entries(fields)) el(`st-${key}`).textContent = value;
    },
    setBadge,
    /**
     * @param {'in' | 'out'} dir @param {string} text @param {number} [id] outgoing message id
     */
    addMessage(dir, text, id) {
      const item = document.createElement('li');
      item.className = dir;
      item.textContent = text;
      const meta = document.createElement('span');
      meta.className = 'meta';
      meta.textContent = dir === 'out' ? 'sending' : '';
      item.append(meta);
      if (dir === 'out' && id !== undefined) {
        item.dataset.status = 'sending';
        outgoing.set(id, item);
      }
      const atBottom = messages.scrollTop + messages.clientHeight >= messages.scrollHeight - 4;
      messages.append(item);
      if (atBottom) messages.scrollTop = messages.scrollHeight;
    },
    /** @param {number} id @param {'delivered' | 'failed'} status @param {string} label */
    markMessage(id, status, label) {
      const item = outgoing.get(id);
      if (!item) return;
      item.dataset.status = status;
      const meta = item.querySelector('.meta');
      if (meta) meta.textContent = label;
      outgoing.delete(id);
    },
    /** @param {string} line */
    addEvent(line) {
      const item = document.createElement('li');
      const time = document.createElement('time');
      time.textContent = new Date().toISOString().slice(11, 23);
      item.append(time, line);
      events.append(item);
      while (events.childElementCount > MAX_EVENTS) events.firstElementChild?.remove();
      events.scrollTop = events.scrollHeight;
    },
  };
}
