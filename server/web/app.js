// The m40llm chat page. It talks to the server it was loaded from:
// GET /v1/models (model picker), GET /api/ps (context size) and
// POST /v1/chat/completions, streamed as Server-Sent Events.
//
// Model output is never parsed as HTML: the Markdown renderer below builds
// DOM nodes and puts every piece of text in with text nodes, and the
// page's Content-Security-Policy requires Trusted Types, so an innerHTML
// assignment would throw.
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);
  const KEY_CHAT = 'm40llm.chat';
  const KEY_SETTINGS = 'm40llm.settings';
  const KEY_API = 'm40llm.apiKey';
  const NUMBERS = ['temperature', 'top_p', 'top_k', 'max_tokens', 'seed'];
  const INTEGERS = new Set(['top_k', 'max_tokens', 'seed']);

  const store = {
    get(k, d) {
      try {
        const v = localStorage.getItem(k);
        return v === null ? d : JSON.parse(v);
      } catch (e) {
        return d;
      }
    },
    set(k, v) {
      try { localStorage.setItem(k, JSON.stringify(v)); } catch (e) { /* full or disabled */ }
    },
    del(k) {
      try { localStorage.removeItem(k); } catch (e) { /* disabled */ }
    },
  };

  // State kept in localStorage: the conversation, the settings, the key.
  const chat = loadChat();
  const settings = Object.assign({ model: '', system: '' }, store.get(KEY_SETTINGS, {}));
  let apiKey = String(store.get(KEY_API, '') || '');
  let ctxSize = 0; // positions per request, from /api/ps; 0 while unknown
  let controller = null; // the AbortController of the reply in progress

  function loadChat() {
    const c = store.get(KEY_CHAT, null);
    const msgs = c && Array.isArray(c.messages) ? c.messages : [];
    return {
      messages: msgs.filter((m) => m && (m.role === 'user' || m.role === 'assistant') && typeof m.content === 'string'),
    };
  }
  const saveChat = () => store.set(KEY_CHAT, chat);
  const saveSettings = () => store.set(KEY_SETTINGS, settings);

  function status(text) { $('status').textContent = text || ''; }

  // ---- API calls, with the key asked for on 401 ----

  let keyPrompt = null;
  function askKey(message) {
    if (keyPrompt) return keyPrompt;
    keyPrompt = new Promise((resolve, reject) => {
      const dialog = $('key-dialog');
      const form = $('key-form');
      const input = $('key-input');
      $('key-message').textContent = message;
      input.value = '';
      const finish = () => {
        form.removeEventListener('submit', onSubmit);
        dialog.removeEventListener('cancel', onCancel);
        keyPrompt = null;
      };
      const onSubmit = (e) => {
        e.preventDefault();
        const v = input.value.trim();
        if (!v) return;
        finish();
        dialog.close();
        resolve(v);
      };
      const onCancel = () => {
        finish();
        reject(new Error('the server needs an API key'));
      };
      form.addEventListener('submit', onSubmit);
      dialog.addEventListener('cancel', onCancel);
      dialog.showModal();
      input.focus();
    });
    return keyPrompt;
  }

  // api is fetch with the key; on 401 it asks for a key, keeps it and
  // sends the request again.
  async function api(path, init) {
    init = init || {};
    for (;;) {
      const headers = new Headers(init.headers || {});
      if (apiKey) headers.set('Authorization', 'Bearer ' + apiKey);
      const resp = await fetch(path, Object.assign({}, init, { headers }));
      if (resp.status !== 401) return resp;
      let message = 'The server needs an API key (serve --api-key).';
      if (apiKey) message = 'The key was refused: ' + (await errorText(resp)) + '.';
      apiKey = await askKey(message);
      store.set(KEY_API, apiKey);
    }
  }

  // errorText reads an error body in OpenAI's or ollama's shape.
  async function errorText(resp) {
    try {
      const b = await resp.json();
      if (b && b.error) return typeof b.error === 'string' ? b.error : b.error.message || resp.statusText;
    } catch (e) { /* not JSON */ }
    return resp.status + ' ' + resp.statusText;
  }

  async function loadModels() {
    const resp = await api('/v1/models');
    if (!resp.ok) throw new Error(await errorText(resp));
    const list = ((await resp.json()).data || []).map((m) => String(m.id));
    const select = $('model');
    select.replaceChildren(...list.map((id) => {
      const o = document.createElement('option');
      o.value = id;
      o.textContent = id;
      return o;
    }));
    if (list.includes(settings.model)) select.value = settings.model;
    settings.model = select.value;
    await loadContext();
  }

  // loadContext reads the context size of the chosen model from /api/ps.
  async function loadContext() {
    ctxSize = 0;
    const resp = await api('/api/ps');
    if (!resp.ok) return;
    const models = (await resp.json()).models || [];
    const name = settings.model;
    const m = models.find((x) => x.model === name || x.name === name || String(x.name).split(':')[0] === name) || models[0];
    if (m && m.context_length > 0) ctxSize = m.context_length;
  }

  // ---- Markdown, rendered as DOM nodes (never as HTML) ----

  const el = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  };

  // Inline: `code`, **bold**, *italic*, [text](http(s) URL). Everything
  // else is text.
  const INLINE = /(`+)([\s\S]*?[^`])\1(?!`)|\*\*(?=\S)([\s\S]*?\S)\*\*|\*(?=[^*\s])([^*]*?[^*\s])\*|\[([^\]\n]+)\]\((https?:\/\/[^\s)]+)\)/g;
  function inline(parent, text) {
    let last = 0;
    INLINE.lastIndex = 0;
    for (const m of text.matchAll(INLINE)) {
      if (m.index > last) parent.append(document.createTextNode(text.slice(last, m.index)));
      if (m[1] !== undefined) {
        parent.append(el('code', '', m[2]));
      } else if (m[3] !== undefined) {
        const s = el('strong');
        inline(s, m[3]);
        parent.append(s);
      } else if (m[4] !== undefined) {
        const s = el('em');
        inline(s, m[4]);
        parent.append(s);
      } else {
        let url = null;
        try { url = new URL(m[6]); } catch (e) { url = null; }
        if (url && (url.protocol === 'http:' || url.protocol === 'https:')) {
          const a = el('a', '', m[5]);
          a.href = url.href;
          a.rel = 'noopener noreferrer';
          a.target = '_blank';
          parent.append(a);
        } else {
          parent.append(document.createTextNode(m[0]));
        }
      }
      last = m.index + m[0].length;
    }
    if (last < text.length) parent.append(document.createTextNode(text.slice(last)));
  }

  function codeBlock(lang, code) {
    const wrap = el('div', 'code');
    const bar = el('div', 'code-bar');
    bar.append(el('span', 'lang', lang));
    const copy = el('button', 'copy', 'Copy');
    copy.type = 'button';
    copy.addEventListener('click', () => {
      if (navigator.clipboard) navigator.clipboard.writeText(code).then(() => { copy.textContent = 'Copied'; }, () => {});
    });
    bar.append(copy);
    const pre = el('pre');
    pre.append(el('code', '', code));
    wrap.append(bar, pre);
    return wrap;
  }

  // markdown returns a fragment with text's blocks: fenced code (an open
  // fence runs to the end, as while a reply streams), headings, lists,
  // quotes, rules and paragraphs (single newlines kept as line breaks).
  function markdown(text) {
    const out = document.createDocumentFragment();
    const lines = text.replace(/\r\n?/g, '\n').split('\n');
    let para = [];
    let list = null;
    const flushPara = () => {
      if (!para.length) return;
      const p = el('p');
      para.forEach((line, i) => {
        if (i) p.append(el('br'));
        inline(p, line);
      });
      out.append(p);
      para = [];
    };
    const flushList = () => { if (list) out.append(list); list = null; };
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i];
      let m;
      if ((m = /^\s*(`{3,}|~{3,})\s*([\w+#.-]*)/.exec(line))) {
        flushPara();
        flushList();
        const fence = m[1];
        const body = [];
        for (i++; i < lines.length && !lines[i].trim().startsWith(fence); i++) body.push(lines[i]);
        out.append(codeBlock(m[2], body.join('\n')));
      } else if (!line.trim()) {
        flushPara();
        flushList();
      } else if ((m = /^(#{1,6})\s+(.*)$/.exec(line))) {
        flushPara();
        flushList();
        const h = el('h' + Math.min(6, m[1].length + 2));
        inline(h, m[2]);
        out.append(h);
      } else if (/^\s*([-*_])(\s*\1){2,}\s*$/.test(line)) {
        flushPara();
        flushList();
        out.append(el('hr'));
      } else if ((m = /^\s*([-*+]|\d{1,9}[.)])\s+(.*)$/.exec(line))) {
        flushPara();
        const tag = /\d/.test(m[1]) ? 'ol' : 'ul';
        if (!list || list.tagName.toLowerCase() !== tag) {
          flushList();
          list = el(tag);
          if (tag === 'ol') list.start = parseInt(m[1], 10);
        }
        const li = el('li');
        inline(li, m[2]);
        list.append(li);
      } else if ((m = /^\s*>\s?(.*)$/.exec(line))) {
        flushPara();
        flushList();
        const q = el('blockquote');
        inline(q, m[1]);
        out.append(q);
      } else {
        flushList();
        para.push(line);
      }
    }
    flushPara();
    flushList();
    return out;
  }

  // ---- The conversation ----

  function statsText(m) {
    const s = m.stats;
    if (!s) return '';
    const parts = [];
    if (s.completion_tokens !== undefined) parts.push(s.completion_tokens + ' tokens');
    if (s.tokens_per_second !== undefined) parts.push(s.tokens_per_second.toFixed(1) + ' tok/s');
    if (s.prompt_tokens !== undefined) {
      const used = s.prompt_tokens + (s.completion_tokens || 0);
      let c = 'context ' + used;
      if (s.ctx > 0) c += ' / ' + s.ctx + ' (' + Math.round((100 * used) / s.ctx) + '%)';
      parts.push(c);
    }
    if (s.finish) parts.push('finish: ' + s.finish);
    return parts.join(' · ');
  }

  function fillBody(body, m) {
    if (m.role === 'assistant') body.replaceChildren(markdown(m.content));
    else body.textContent = m.content;
  }

  function messageNode(m) {
    const node = el('article', 'msg ' + m.role);
    node.dataset.state = m.state || 'done';
    node.append(el('div', 'role', m.role === 'user' ? 'You' : 'Assistant'));
    const body = el('div', 'body');
    fillBody(body, m);
    node.append(body);
    const foot = el('div', 'stats', statsText(m));
    if (m.stopped) foot.textContent = (foot.textContent ? foot.textContent + ' · ' : '') + 'stopped';
    node.append(foot);
    if (m.error) node.append(el('div', 'error', m.error));
    return node;
  }

  function render() {
    const box = $('messages');
    box.replaceChildren(...chat.messages.map(messageNode));
    box.scrollTop = box.scrollHeight;
  }

  // While a reply streams only its body is rendered again, once a frame.
  let pending = false;
  function renderReply(m) {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      const box = $('messages');
      const node = box.lastElementChild;
      if (!node || m.state !== 'streaming') return;
      fillBody(node.querySelector('.body'), m);
      box.scrollTop = box.scrollHeight;
    });
  }

  function setBusy(busy) {
    $('send').disabled = busy;
    $('stop').hidden = !busy;
    $('model').disabled = busy;
    document.body.dataset.busy = busy ? 'true' : 'false';
  }

  function requestBody() {
    const msgs = [];
    if (settings.system && settings.system.trim()) msgs.push({ role: 'system', content: settings.system });
    for (const m of chat.messages.slice(0, -1)) msgs.push({ role: m.role, content: m.content });
    const body = { model: settings.model, messages: msgs, stream: true, stream_options: { include_usage: true } };
    for (const k of NUMBERS) {
      const v = settings[k];
      if (typeof v === 'number' && Number.isFinite(v)) body[k] = v;
    }
    return body;
  }

  // readEvents calls onData with the data of each event of an SSE body
  // until "[DONE]" or the end.
  async function readEvents(resp, onData) {
    const reader = resp.body.getReader();
    const dec = new TextDecoder();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += dec.decode(value, { stream: true });
      let i;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const event = buf.slice(0, i);
        buf = buf.slice(i + 2);
        for (const line of event.split('\n')) {
          if (!line.startsWith('data:')) continue;
          const data = line.slice(5).trim();
          if (data === '[DONE]') {
            reader.cancel().catch(() => {});
            return;
          }
          onData(JSON.parse(data));
        }
      }
    }
  }

  async function send() {
    const input = $('input');
    const text = input.value;
    if (!text.trim() || controller) return;
    if (!settings.model) {
      status('No model: the server did not list one.');
      return;
    }
    input.value = '';
    chat.messages.push({ role: 'user', content: text });
    const reply = { role: 'assistant', content: '', state: 'streaming' };
    chat.messages.push(reply);
    saveChat();
    render();
    controller = new AbortController();
    setBusy(true);
    status('Generating…');
    const start = performance.now();
    let first = 0;
    let usage = null;
    let finish = '';
    try {
      const resp = await api('/v1/chat/completions', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify(requestBody()),
        signal: controller.signal,
      });
      if (!resp.ok) throw new Error(await errorText(resp));
      await readEvents(resp, (c) => {
        if (c.error) throw new Error(c.error.message || String(c.error));
        if (c.usage) usage = c.usage;
        const ch = c.choices && c.choices[0];
        if (!ch) return;
        if (ch.delta && ch.delta.content) {
          if (!first) first = performance.now();
          reply.content += ch.delta.content;
          renderReply(reply);
        }
        if (ch.finish_reason) finish = ch.finish_reason;
      });
      const end = performance.now();
      const stats = { finish, ctx: ctxSize, seconds: (end - start) / 1000 };
      if (usage) {
        stats.prompt_tokens = usage.prompt_tokens;
        stats.completion_tokens = usage.completion_tokens;
        // The first token's time is the prompt's; the rest is decoding.
        const n = usage.completion_tokens - 1;
        if (n > 0 && end > first) stats.tokens_per_second = n / ((end - first) / 1000);
      }
      reply.stats = stats;
      status('');
    } catch (e) {
      if (e.name === 'AbortError') {
        reply.stopped = true;
        status('Stopped.');
      } else {
        reply.error = e.message;
        status('Error: ' + e.message);
      }
    } finally {
      delete reply.state;
      controller = null;
      setBusy(false);
      saveChat();
      render();
      input.focus();
    }
  }

  function stop() {
    if (controller) controller.abort();
  }

  function newChat() {
    stop();
    chat.messages = [];
    store.del(KEY_CHAT);
    render();
    status('');
    $('input').focus();
  }

  // ---- Wiring ----

  function init() {
    $('system').value = settings.system;
    $('system').addEventListener('input', () => {
      settings.system = $('system').value;
      saveSettings();
    });
    for (const k of NUMBERS) {
      const input = $(k);
      if (typeof settings[k] === 'number') input.value = String(settings[k]);
      input.addEventListener('input', () => {
        const v = input.value.trim() === '' ? NaN : Number(input.value);
        if (Number.isFinite(v)) settings[k] = INTEGERS.has(k) ? Math.trunc(v) : v;
        else delete settings[k];
        saveSettings();
      });
    }
    $('model').addEventListener('change', () => {
      settings.model = $('model').value;
      saveSettings();
      loadContext().catch(() => {});
    });
    $('composer').addEventListener('submit', (e) => {
      e.preventDefault();
      send();
    });
    $('input').addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        send();
      }
    });
    $('stop').addEventListener('click', stop);
    $('new-chat').addEventListener('click', newChat);
    setBusy(false);
    render();
    loadModels().then(() => {
      document.body.dataset.ready = 'true';
    }, (e) => status('Error: ' + e.message));
  }

  init();
})();
