// aftercall dashboard: the little behaviour the server-rendered pages need (live
// refresh, the agent editor, replay and purge, pause and resume). No dependencies, no build step.
'use strict';

(() => {
  const $ = (sel, root = document) => root.querySelector(sel);
  const $$ = (sel, root = document) => [...root.querySelectorAll(sel)];
  const csrf = () => $('meta[name="csrf-token"]')?.content || '';

  // ---- talking to the API through /ui/api (cookie + CSRF header) ----

  async function api(method, path, body, contentType = 'application/json') {
    const headers = { 'X-CSRF-Token': csrf(), Accept: 'application/json' };
    let payload;
    if (body !== undefined) {
      headers['Content-Type'] = contentType;
      payload = JSON.stringify(body);
    }
    const resp = await fetch(path, { method, headers, body: payload, credentials: 'same-origin' });
    if (resp.status === 401) {
      location.assign('/ui/login?next=' + encodeURIComponent(location.pathname + location.search));
      throw new Error('signed out');
    }
    const text = await resp.text();
    let json = null;
    if (text) {
      try { json = JSON.parse(text); } catch { json = { message: text }; }
    }
    return { status: resp.status, ok: resp.ok, json };
  }

  const why = (r) => r.json?.message || r.json?.error || `HTTP ${r.status}`;
  const enc = encodeURIComponent;

  // ---- live regions: [data-refresh-url] is re-fetched and replaced ----

  function schedule(el) {
    const ms = Number(el.dataset.refreshMs) || 5000;
    setTimeout(() => refresh(el), ms);
  }

  async function refresh(el) {
    if (!el.isConnected) return;
    if (document.hidden) return schedule(el);
    try {
      const resp = await fetch(el.dataset.refreshUrl, { credentials: 'same-origin' });
      if (resp.redirected && new URL(resp.url).pathname === '/ui/login') {
        location.assign(resp.url);
        return;
      }
      if (!resp.ok) return schedule(el);
      const tpl = document.createElement('template');
      tpl.innerHTML = (await resp.text()).trim();
      const fresh = tpl.content.firstElementChild;
      if (!fresh || !el.isConnected) return;
      // Keep what the reader opened, and their focus if it was inside.
      const open = $$('details[open]', el).map((d) => d.dataset.key).filter(Boolean);
      const hadFocus = el.contains(document.activeElement);
      el.replaceWith(fresh);
      for (const key of open) {
        const d = $(`details[data-key="${CSS.escape(key)}"]`, fresh);
        if (d) d.open = true;
      }
      if (hadFocus) fresh.setAttribute('tabindex', '-1'), fresh.focus({ preventScroll: true });
      if (fresh.dataset.refreshUrl) schedule(fresh);
    } catch {
      schedule(el);
    }
  }

  // ---- confirmation dialog ----

  function confirmDialog(text, okLabel) {
    const dlg = $('#confirm');
    const back = document.activeElement;
    $('#confirm-text', dlg).textContent = text;
    $('button[value="ok"]', dlg).textContent = okLabel;
    return new Promise((resolve) => {
      const finish = (answer) => {
        dlg.removeEventListener('click', onClick);
        dlg.removeEventListener('cancel', onCancel);
        dlg.close();
        if (back instanceof HTMLElement) back.focus();
        resolve(answer);
      };
      const onClick = (e) => {
        const b = e.target.closest('button');
        if (b) finish(b.value === 'ok');
      };
      const onCancel = (e) => {
        e.preventDefault();
        finish(false);
      };
      dlg.addEventListener('click', onClick);
      dlg.addEventListener('cancel', onCancel);
      dlg.showModal();
      // The safe choice has the focus: Enter does not destroy anything.
      $('button[value="cancel"]', dlg).focus();
    });
  }

  // ---- agent editor ----

  function initEditor(form) {
    const list = $('#actions', form);
    const formError = $('#form-error', form);
    const status = $('#save-status', form);
    const admin = form.dataset.admin === 'true';
    const timers = new WeakMap();

    const say = (text) => { status.textContent = text; };

    function renumber() {
      $$(':scope > li', list).forEach((li, i) => {
        $('.action-number', li).textContent = `Action ${i + 1}`;
        for (const el of [li, ...$$('*', li)]) {
          for (const attr of ['id', 'for', 'aria-describedby', 'data-path']) {
            const v = el.getAttribute(attr);
            if (v === null) continue;
            el.setAttribute(attr, v.replace(/\ba\d+-/g, `a${i}-`).replace(/actions\[\d+\]/g, `actions[${i}]`));
          }
        }
        $('[data-act="up"]', li).setAttribute('aria-label', `Move action ${i + 1} up`);
        $('[data-act="down"]', li).setAttribute('aria-label', `Move action ${i + 1} down`);
        $('[data-act="remove"]', li).setAttribute('aria-label', `Remove action ${i + 1}`);
      });
      $('#no-actions', form).hidden = list.children.length > 0;
    }

    function agentStyle() {
      const v = (path) => $(`[data-path="${path}"]`, form).value.trim() || null;
      return { name: v('name'), date_format: v('date_format'), utc_offset: v('utc_offset') };
    }

    function preview(field) {
      const out = $('output', field);
      const input = $('input, textarea, select', field);
      if (!out || !input || !admin) return;
      clearTimeout(timers.get(field));
      timers.set(field, setTimeout(async () => {
        const req = { agent: agentStyle() };
        if (field.dataset.preview === 'builtin') {
          if (!input.value) { out.textContent = ''; out.classList.remove('bad'); return; }
          req.builtin = input.value;
        } else {
          if (!input.value.trim()) {
            out.textContent = 'required' in field.dataset ? '(empty)' : '(empty: the default applies)';
            out.classList.remove('bad');
            return;
          }
          req.source = input.value;
        }
        try {
          const r = await api('POST', '/ui/preview', req);
          const ok = r.ok && typeof r.json?.text === 'string';
          out.textContent = ok ? r.json.text : (r.json?.error && r.ok ? r.json.error : why(r));
          out.classList.toggle('bad', !ok);
        } catch { /* signed out: handled by api() */ }
      }, 250));
    }
    const previewAll = (root = form) => $$('.field[data-preview]', root).forEach(preview);

    list.addEventListener('click', (e) => {
      const b = e.target.closest('button[data-act]');
      if (!b) return;
      const li = b.closest('li.action');
      const act = b.dataset.act;
      if (act === 'up' && li.previousElementSibling) {
        li.previousElementSibling.before(li);
      } else if (act === 'down' && li.nextElementSibling) {
        li.nextElementSibling.after(li);
      } else if (act === 'remove') {
        const next = li.nextElementSibling || li.previousElementSibling;
        li.remove();
        renumber();
        ($('[data-act="remove"]', next || form) || $('#add-action', form)).focus();
        say('Action removed; Save to keep the change.');
        return;
      } else {
        return;
      }
      renumber();
      b.focus();
      say(`Moved to position ${[...list.children].indexOf(li) + 1}; Save to keep the order.`);
    });

    $('#add-action', form).addEventListener('click', () => {
      const type = $('#new-type', form).value;
      const li = document.getElementById(`tpl-${type}`).content.firstElementChild.cloneNode(true);
      list.append(li);
      renumber();
      $('input, select, textarea', li).focus();
      previewAll(li);
    });

    form.addEventListener('click', (e) => {
      const b = e.target.closest('button[data-var]');
      if (!b) return;
      const field = b.closest('.field');
      const input = $('input, textarea', field);
      const text = `{{${b.dataset.var}}}`;
      const start = input.selectionStart ?? input.value.length;
      const end = input.selectionEnd ?? input.value.length;
      input.setRangeText(text, start, end, 'end');
      input.focus();
      preview(field);
    });

    form.addEventListener('input', (e) => {
      const field = e.target.closest('.field');
      if (!field) return;
      if (field.dataset.preview) preview(field);
      if (['name', 'date_format', 'utc_offset'].includes(field.dataset.field) && !e.target.closest('li.action')) previewAll();
    });

    // Reading the form back into the config, field kinds as the server rendered them.
    const lines = (s) => s.split('\n').map((l) => l.trim()).filter(Boolean);

    function collect() {
      const errors = [];
      const cfg = {};
      for (const k of ['name', 'date_format', 'utc_offset', 'email_from']) {
        const v = $(`[data-path="${k}"]`, form).value.trim();
        cfg[k] = v === '' ? null : v; // null removes it (merge patch)
      }
      const actions = $$(':scope > li', list).map((li) => {
        let action = { type: li.dataset.type };
        for (const field of $$('.field', li)) {
          const input = $('input, textarea, select', field);
          const name = field.dataset.field;
          const raw = input.value;
          const fail = (message) => errors.push({ path: input.dataset.path, message });
          switch (field.dataset.kind) {
            case 'bool':
              action[name] = input.checked;
              break;
            case 'number':
              if (raw.trim() !== '') {
                const n = Number(raw);
                if (Number.isInteger(n) && n >= 0) action[name] = n;
                else fail('must be a whole number, 0 or more');
              }
              break;
            case 'lines': {
              const v = lines(raw);
              if (v.length) action[name] = v;
              break;
            }
            case 'secret': {
              const v = lines(raw);
              if (v.length) action[name] = v.length === 1 ? v[0] : v;
              break;
            }
            case 'headers': {
              const h = {};
              for (const l of lines(raw)) {
                const at = l.indexOf(':');
                if (at <= 0) fail(`\`${l}\` is not \`Name: value\``);
                else h[l.slice(0, at).trim()] = l.slice(at + 1).trim();
              }
              if (Object.keys(h).length) action[name] = h;
              break;
            }
            case 'json':
              try { action = JSON.parse(raw); } catch (err) { fail(`is not JSON: ${err.message}`); }
              break;
            default: {
              const v = field.dataset.kind === 'area' ? raw : raw.trim();
              if (v.trim() !== '') action[name] = v;
              else if ('required' in field.dataset) fail('is required');
            }
          }
        }
        return action;
      });
      cfg.voice_tools = {
        post_call_follow_up: { enabled: $('#enabled', form).checked, actions },
      };
      return { cfg, errors };
    }

    function clearErrors() {
      for (const p of $$('[data-error]', form)) { p.hidden = true; p.textContent = ''; }
      for (const el of $$('[aria-invalid]', form)) el.removeAttribute('aria-invalid');
      formError.hidden = true;
      formError.textContent = '';
    }

    // `a.b[1].c` → `a.b[1]` → `a.b` → `a` → ''
    const parentPath = (p) => {
      const m = p.match(/^(.*)(\[\d+\]|\.[^.[\]]+)$/);
      return m ? m[1] : '';
    };

    // Shows `message` next to the field at `path` (or its nearest enclosing one);
    // returns the element to focus.
    function showError(path, message) {
      let target = null;
      for (let p = path; p && !target; p = parentPath(p)) {
        target = $(`[data-path="${CSS.escape(p)}"]`, form);
      }
      if (!target) {
        formError.textContent = `Not saved: ${path ? `${path}: ` : ''}${message}`;
        formError.hidden = false;
        return formError;
      }
      const holder = target.matches('fieldset') ? target : target.closest('.field');
      const err = $('[data-error]', holder);
      err.textContent = target.dataset.path === path ? message : `${path}: ${message}`;
      err.hidden = false;
      if (!target.matches('fieldset')) target.setAttribute('aria-invalid', 'true');
      formError.textContent = 'Not saved: fix the field marked below.';
      formError.hidden = false;
      return target.matches('fieldset') ? $('button', target) : target;
    }

    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      clearErrors();
      const { cfg, errors } = collect();
      if (errors.length) {
        const first = errors.map((x) => showError(x.path, x.message))[0];
        if (errors.length > 1) formError.textContent = `Not saved: fix the ${errors.length} fields marked below.`;
        first?.focus();
        return;
      }
      say('Saving…');
      const id = form.dataset.agent;
      let r;
      try {
        r = await api('PATCH', `/ui/api/agents/${enc(id)}`, cfg, 'application/merge-patch+json');
      } catch {
        return;
      }
      if (r.ok) {
        location.assign(`/ui/agents/${enc(id)}?saved=1`);
        return;
      }
      say('');
      if (r.status === 422 && r.json?.field) {
        showError(r.json.field, r.json.message).focus();
        return;
      }
      formError.textContent = `Not saved: ${why(r)}`;
      formError.hidden = false;
      formError.focus();
    });

    // What the form's config would do on the agent's recent stored calls (nothing sent).
    const previewBtn = $('#preview-calls', form);
    previewBtn?.addEventListener('click', async () => {
      clearErrors();
      const { cfg, errors } = collect();
      if (errors.length) {
        errors.map((x) => showError(x.path, x.message))[0]?.focus();
        return;
      }
      const out = $('#call-preview', form);
      const list = $('#call-preview-list', form);
      let r;
      try {
        r = await api('POST', `/ui/api/agents/${enc(form.dataset.agent)}/preview?limit=10`, cfg, 'application/merge-patch+json');
      } catch {
        return;
      }
      if (!r.ok) {
        if (r.status === 422 && r.json?.field) showError(r.json.field, r.json.message).focus();
        else { formError.textContent = `No preview: ${why(r)}`; formError.hidden = false; }
        return;
      }
      list.replaceChildren();
      const calls = r.json.calls || [];
      if (!calls.length) {
        const li = document.createElement('li');
        li.textContent = 'This agent has no stored calls yet.';
        list.append(li);
      }
      for (const c of calls) {
        const li = document.createElement('li');
        li.className = 'preview-call';
        const h = document.createElement('strong');
        h.textContent = `Call ${c.call_id}`;
        li.append(h);
        const ul = document.createElement('ul');
        if (c.skipped) {
          const x = document.createElement('li');
          x.textContent = `nothing: ${c.skipped}`;
          ul.append(x);
        }
        for (const a of c.actions) {
          const x = document.createElement('li');
          x.dataset.fires = a.fires ? 'true' : 'false';
          const o = a.output || {};
          const what = o.text ?? o.subject ?? o.title ?? o.url ?? '';
          x.textContent = a.fires
            ? `#${a.index} ${a.type}: fires — ${o.subject ? `${o.subject} — ` : ''}${what}${o.segments ? ` (${o.segments} segment${o.segments === 1 ? '' : 's'})` : ''}`
            : `#${a.index} ${a.type}: ${a.error ? `would fail: ${a.error}` : `skipped: ${a.reason}`}`;
          ul.append(x);
        }
        li.append(ul);
        list.append(li);
      }
      out.hidden = false;
    });

    formError.setAttribute('tabindex', '-1');
    renumber();
    previewAll();
  }

  // ---- dead letters ----

  function describeFilter(f) {
    return Object.entries(f).map(([k, v]) => `${k} = ${v}`).join(', ');
  }

  function initDeadLetters(form) {
    const status = $('#dlq-status', form);
    const say = (text) => { if (status) status.textContent = text; };
    const boxes = () => $$('input[name="job"]', form);
    const filter = JSON.parse(form.dataset.filter || '{}');
    const filtered = Object.keys(filter).length > 0;

    $('#select-all', form)?.addEventListener('change', (e) => {
      for (const c of boxes()) c.checked = e.target.checked;
    });

    const plural = (n) => `${n} dead letter${n === 1 ? '' : 's'}`;

    const done = (verb, n) => {
      const u = new URL(location.href);
      u.searchParams.delete('cursor');
      u.searchParams.set('done', `${verb}-${n}`);
      location.assign(u);
    };

    async function each(ids, verb) {
      let n = 0;
      const failed = [];
      say(`${verb === 'replay' ? 'Replaying' : 'Purging'} ${ids.length}…`);
      for (const id of ids) {
        const r = verb === 'replay'
          ? await api('POST', `/ui/api/dead-letters/${enc(id)}/replay`)
          : await api('DELETE', `/ui/api/dead-letters/${enc(id)}`);
        if (r.ok) n += 1;
        else failed.push(`${id}: ${why(r)}`);
      }
      const past = verb === 'replay' ? 'replayed' : 'purged';
      if (failed.length) say(`${n} of ${ids.length} ${past}. ${failed.join('; ')}`);
      else done(past, n);
    }

    form.addEventListener('click', async (e) => {
      const b = e.target.closest('button[data-bulk]');
      if (!b) return;
      const ids = boxes().filter((c) => c.checked).map((c) => c.value);
      // What the dry run counted, in words.
      const what = (n) => (filtered ? `the ${plural(n)} matching ${describeFilter(filter)}` : `all ${plural(n)}`);
      const body = filtered ? filter : { all: true };
      try {
        switch (b.dataset.bulk) {
          case 'replay-selected':
            if (!ids.length) return say('Select dead letters first.');
            return await each(ids, 'replay');
          case 'purge-selected':
            if (!ids.length) return say('Select dead letters first.');
            if (!await confirmDialog(`Purge ${ids.length} selected dead letter${ids.length === 1 ? '' : 's'} for good? Their payloads and attempts are deleted; this cannot be undone.`, `Purge ${ids.length}`)) return;
            return await each(ids, 'purge');
          case 'replay-filter': {
            // A dry run first, so the confirmation says how many.
            const dry = await api('POST', '/ui/api/dead-letters/replay', { ...body, dry_run: true });
            if (!dry.ok) return say(why(dry));
            const n = dry.json.would_replay;
            if (n === 0) return say('No dead letter matches; nothing to replay.');
            if (!await confirmDialog(`Replay ${what(n)}? Each is queued again with a fresh attempt budget.`, `Replay ${n}`)) return;
            const r = await api('POST', '/ui/api/dead-letters/replay', body);
            return r.ok ? done('replayed', r.json.replayed) : say(why(r));
          }
          case 'purge-filter': {
            const dry = await api('POST', '/ui/api/dead-letters/purge', { ...body, dry_run: true });
            if (!dry.ok) return say(why(dry));
            const n = dry.json.would_purge;
            if (n === 0) return say('No dead letter matches; nothing to purge.');
            if (!await confirmDialog(`Purge ${what(n)} for good? Their payloads and attempts are deleted; this cannot be undone.`, `Purge ${n}`)) return;
            const r = await api('POST', '/ui/api/dead-letters/purge', body);
            return r.ok ? done('purged', r.json.purged) : say(why(r));
          }
          default:
        }
      } catch { /* signed out: handled by api() */ }
    });
  }

  function initDeadLetter(box) {
    const status = $('#dl-status', box);
    box.addEventListener('click', async (e) => {
      const b = e.target.closest('button[data-one]');
      if (!b) return;
      const id = box.dataset.job;
      try {
        if (b.dataset.one === 'replay') {
          status.textContent = 'Replaying…';
          const r = await api('POST', `/ui/api/dead-letters/${enc(id)}/replay`);
          if (!r.ok) { status.textContent = why(r); return; }
          location.assign(box.dataset.call ? `/ui/calls?call_id=${enc(box.dataset.call)}` : '/ui/dead-letters?done=replayed-1');
        } else {
          if (!await confirmDialog(`Purge dead letter ${id} for good? Its payload and attempts are deleted; this cannot be undone.`, 'Purge')) return;
          const r = await api('DELETE', `/ui/api/dead-letters/${enc(id)}`);
          if (!r.ok) { status.textContent = why(r); return; }
          location.assign('/ui/dead-letters?done=purged-1');
        }
      } catch { /* signed out: handled by api() */ }
    });
  }

  // ---- opt-outs ----

  function initOptOuts() {
    const form = $('#opt-out-form');
    form?.addEventListener('submit', async (e) => {
      e.preventDefault();
      const status = $('#oo-status');
      const body = { channel: $('#oo-channel').value, address: $('#oo-address').value.trim() };
      try {
        const r = await api('POST', '/ui/api/opt-outs', body);
        if (!r.ok) { status.textContent = why(r); return; }
        location.reload();
      } catch { /* signed out: handled by api() */ }
    });
    $$('.oo-remove').forEach((b) => b.addEventListener('click', async () => {
      const q = `channel=${enc(b.dataset.channel)}&address=${enc(b.dataset.address)}`;
      if (!await confirmDialog(`Remove the opt-out of ${b.dataset.address}? Agents may ${b.dataset.channel === 'sms' ? 'text' : 'e-mail'} it again.`, 'Remove')) return;
      try {
        const r = await api('DELETE', `/ui/api/opt-outs?${q}`);
        if (r.ok) location.reload();
      } catch { /* signed out */ }
    }));
  }

  // ---- destinations: pause and resume ----

  function initDestinations(box) {
    const status = $('#dest-status');
    const send = async (verb, kind, value) => {
      const r = await api('POST', `/ui/api/destinations/${verb}`, { [kind]: value });
      if (r.ok) location.reload();
      else if (status) status.textContent = why(r);
    };
    box.addEventListener('click', async (e) => {
      const b = e.target.closest('button[data-scope-verb]');
      if (!b) return;
      try { await send(b.dataset.scopeVerb, b.dataset.scopeKind, b.dataset.scopeValue); } catch { /* signed out */ }
    });
    const form = $('#pause-form');
    if (form) {
      form.addEventListener('submit', async (e) => {
        e.preventDefault();
        try { await send('pause', form.elements.kind.value, form.elements.value.value.trim()); } catch { /* signed out */ }
      });
    }
  }

  // ---- start ----

  $$('[data-refresh-url]').forEach(schedule);
  const editor = $('#agent-form');
  if (editor) initEditor(editor);
  const dlq = $('#dlq');
  if (dlq) initDeadLetters(dlq);
  const one = $('#dl-actions');
  if (one) initDeadLetter(one);
  if ($('#opt-out-form') || $('#opt-outs')) initOptOuts();
  const dests = $('#destinations');
  if (dests) initDestinations(dests);
})();
