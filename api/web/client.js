// The dashboard's API client: REST reads and writes with the token from localStorage, and the
// change stream read with fetch() (EventSource cannot send an Authorization header, and a token
// in a URL ends up in logs).
'use strict';

const TOKEN_KEY = 'clickflow.token';

class AuthError extends Error {
  constructor(message) {
    super(message);
    this.name = 'AuthError';
  }
}

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
  }
}

const Client = {
  token() {
    try {
      return localStorage.getItem(TOKEN_KEY) || '';
    } catch (_) {
      return ''; // storage disabled: the token lives for this page only
    }
  },

  setToken(token) {
    try {
      if (token) localStorage.setItem(TOKEN_KEY, token);
      else localStorage.removeItem(TOKEN_KEY);
    } catch (_) {
      /* storage disabled */
    }
    this._memoryToken = token;
  },

  headers(extra) {
    const headers = Object.assign({ Accept: 'application/json' }, extra || {});
    const token = this.token() || this._memoryToken;
    if (token) headers.Authorization = 'Bearer ' + token;
    return headers;
  },

  // Paths are relative ("api/v1/live"), so the page also works behind a proxy under a prefix.
  async request(method, path, body) {
    const init = { method, headers: this.headers(body === undefined ? {} : { 'Content-Type': 'application/json' }) };
    if (body !== undefined) init.body = JSON.stringify(body);
    const response = await fetch(path, init);
    if (response.status === 401) throw new AuthError(await errorText(response));
    if (response.status === 204) return null;
    if (!response.ok) throw new ApiError(response.status, await errorText(response));
    return response.json();
  },

  get(path) {
    return this.request('GET', path);
  },

  // The status a write would get, without changing anything: an empty silence is refused with
  // 400 after the token check, so 400 means "this token may write" and 403 "read only".
  async canWrite() {
    const response = await fetch('api/v1/alerts/silences', {
      method: 'POST',
      headers: this.headers({ 'Content-Type': 'application/json' }),
      body: '{}',
    });
    if (response.status === 401) throw new AuthError(await errorText(response));
    return response.status !== 403;
  },

  // Reads `api/v1/stream` until `signal` aborts, calling onEvent(name, data) per server-sent
  // event and onState('open' | 'retrying' | 'auth', detail). Reconnects with a growing delay.
  async stream(signal, onEvent, onState) {
    let delay = 500;
    // The id of the last event read: a reconnect resumes after it (or the server says `reset`).
    const last = { id: null };
    while (!signal.aborted) {
      try {
        const extra = { Accept: 'text/event-stream' };
        if (last.id !== null) extra['Last-Event-ID'] = last.id;
        // Not `counts`: its cells are most of the stream's bytes and the panels re-read their
        // endpoints anyway; a `live` event (one per batch) says the counts moved.
        const url = 'api/v1/stream?views=live,sessions,funnels,retention,paths,alerts';
        const response = await fetch(url, { headers: this.headers(extra), signal });
        if (response.status === 401) {
          onState('auth', await errorText(response));
          return;
        }
        if (!response.ok || !response.body) throw new ApiError(response.status, await errorText(response));
        onState('open');
        delay = 500;
        await readEvents(response.body, onEvent, last);
        onState('retrying', 'the stream ended');
      } catch (e) {
        if (signal.aborted) return;
        onState('retrying', e.message);
      }
      await sleep(delay, signal);
      delay = Math.min(delay * 2, 10000);
    }
  },
};

async function errorText(response) {
  try {
    const body = await response.json();
    return body.error || response.statusText;
  } catch (_) {
    return response.statusText || 'HTTP ' + response.status;
  }
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    if (signal) signal.addEventListener('abort', () => { clearTimeout(timer); resolve(); }, { once: true });
  });
}

// The server-sent events format (HTML Living Standard, "event stream interpretation"): lines end
// in CR, LF or CRLF; a blank line dispatches; `:` starts a comment (keep-alives).
async function readEvents(body, onEvent, last) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  let name = '';
  let data = [];
  let id = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    const lines = buffer.split(/\r\n|\r|\n/);
    // A trailing CR may be the first half of a CRLF split across chunks: keep it for the next.
    buffer = lines.pop();
    for (const line of lines) {
      if (line === '') {
        if (data.length) {
          const text = data.join('\n');
          let parsed = text;
          try { parsed = JSON.parse(text); } catch (_) { /* `lagged` is plain text */ }
          onEvent(name || 'message', parsed);
        }
        if (id !== null) last.id = id;
        id = null;
        name = '';
        data = [];
        continue;
      }
      if (line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? '' : line.slice(colon + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      if (field === 'event') name = value;
      else if (field === 'id') id = value;
      else if (field === 'data') data.push(value);
    }
  }
}

window.Client = Client;
window.AuthError = AuthError;
window.ApiError = ApiError;
