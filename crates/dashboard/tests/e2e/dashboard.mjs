// The dashboard end to end in chromium, run by ../browser.rs, which starts the worker,
// Redis and the webhook receiver and passes their addresses in the environment.
// Lines starting with `@@ ` ask browser.rs to script the receiver; it answers on stdin.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { chromium } from 'playwright-core';

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set (run this through tests/browser.rs)`);
  return v;
};
const BASE = env('BASE_URL');
const ADMIN = env('ADMIN_TOKEN');
const READ = env('READ_TOKEN');
const INGEST = env('INGEST_TOKEN');
const RECEIVER = env('RECEIVER_URL');
const SHOTS = env('SCREENSHOTS');
const SEED_CALL = JSON.parse(fs.readFileSync(env('SEED_CALL'), 'utf8'));
const AGENT = SEED_CALL.agent_id;

// ---- talking to browser.rs ----
const answers = [];
readline.createInterface({ input: process.stdin }).on('line', (l) => answers.shift()?.(JSON.parse(l)));
const rust = (cmd) => new Promise((resolve) => {
  answers.push(resolve);
  process.stdout.write(`@@ ${JSON.stringify(cmd)}\n`);
});

const log = (msg) => console.log(`[e2e] ${msg}`);
async function step(name, fn) {
  const t0 = Date.now();
  await fn();
  log(`ok  ${name} (${Date.now() - t0} ms)`);
}

/** Polls `check` until it returns a truthy value or the deadline passes. */
async function until(what, check, ms = 20000) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      last = await check();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${last?.message ?? last}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const api = async (method, p, token, body) => {
  const resp = await fetch(BASE + p, {
    method,
    headers: { Authorization: `Bearer ${token}`, ...(body ? { 'Content-Type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await resp.text();
  return { status: resp.status, json: text ? JSON.parse(text) : null };
};
const pushCall = async (callId) => {
  const r = await api('POST', '/calls', INGEST, { ...SEED_CALL, call_id: callId });
  assert.equal(r.status, 202, JSON.stringify(r.json));
};

// ---- the browser ----
await until('the worker to answer', async () => (await fetch(`${BASE}/healthz`)).ok, 30000);

const context = await chromium.launchPersistentContext(env('PROFILE_DIR'), {
  executablePath: env('CHROMIUM'),
  headless: true,
  viewport: { width: 1366, height: 860 },
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const problems = [];
const page = await context.newPage();
const watch = (p) => {
  p.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  p.on('console', (m) => {
    // Answers the test provokes (403, 422, 401) are logged as failed loads; scripts
    // errors and policy (CSP) violations are not expected anywhere.
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) problems.push(`console: ${m.text()}`);
  });
};
watch(page);

const shot = async (name, p = page, fullPage = true) => {
  await p.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage });
};
/** The editor's Save bar is sticky: shoot a tall window rather than the full page. */
const tallShot = async (name) => {
  await page.setViewportSize({ width: 1366, height: 1400 });
  await shot(name, page, false);
  await page.setViewportSize({ width: 1366, height: 860 });
};

/** Every visible form control on the page has a label. */
async function labelled(p = page) {
  const unlabelled = await p.evaluate(() => [...document.querySelectorAll('input, select, textarea')]
    .filter((el) => el.type !== 'hidden' && el.offsetParent !== null)
    .filter((el) => !(el.labels?.length || el.getAttribute('aria-label') || el.getAttribute('aria-labelledby')))
    .map((el) => el.outerHTML.slice(0, 120)));
  assert.deepEqual(unlabelled, [], 'form controls without a label');
}

const field = (action, name) => page.locator(`#actions > li:nth-child(${action}) [data-field="${name}"]`);
const input = (action, name) => field(action, name).locator('input, textarea, select');

async function addAction(type) {
  await page.selectOption('#new-type', type);
  await page.click('#add-action');
}

/** Saves the agent and waits for the page it reloads to ("Saved."). */
async function save() {
  await Promise.all([page.waitForEvent('load'), page.click('#save')]);
  assert.equal(await page.textContent('#saved'), 'Saved.');
}

async function openCall(callId) {
  await page.goto(`${BASE}/ui/calls`);
  await page.fill('#call_id', callId);
  await page.press('#call_id', 'Enter');
  await page.waitForSelector('#call-live');
}

/** Waits, on the call's page (it refreshes by itself), until it is settled. */
async function settled(callId) {
  await until(`call ${callId} to settle`, async () => (await page.textContent('#call-progress'))?.startsWith('settled'));
  return page.$$eval('#call-live .job', (jobs) => jobs.map((j) => j.dataset.state));
}

try {
  await step('unauthenticated pages send you to the login form', async () => {
    await page.goto(`${BASE}/ui/dead-letters`);
    assert.match(page.url(), /\/ui\/login\?next=%2Fui%2Fdead-letters$/);
    await labelled();
    await shot('login');
  });

  await step('a wrong token is refused on the form', async () => {
    await page.fill('#token', 'not-a-token-at-all-0000');
    await page.click('button[type=submit]');
    assert.match(await page.textContent('.error-box'), /not valid/);
  });

  await step('an admin token logs in: a session id in an HttpOnly SameSite=Strict cookie', async () => {
    await page.fill('#token', ADMIN);
    await page.press('#token', 'Enter');
    await page.waitForURL(`${BASE}/ui/dead-letters`);
    const [cookie] = (await context.cookies()).filter((c) => c.name === 'aftercall_session');
    assert.ok(cookie, 'session cookie');
    assert.equal(cookie.httpOnly, true);
    assert.equal(cookie.sameSite, 'Strict');
    assert.equal(cookie.path, '/ui');
    assert.match(cookie.value, /^[0-9a-f]{64}$/, 'a session id');
    assert.ok(!cookie.value.includes(ADMIN) && cookie.value !== Buffer.from(ADMIN).toString('hex'), 'not the token');
    assert.equal(await page.evaluate(() => document.cookie), '', 'scripts cannot read the session id');
  });

  await step('mutations without the CSRF token are refused; the API ignores the cookie', async () => {
    const r = await page.evaluate(async () => {
      const resp = await fetch('/ui/api/agents/evil', {
        method: 'PATCH',
        headers: { 'Content-Type': 'application/json' },
        body: '{"voice_tools":{"post_call_follow_up":{"enabled":false}}}',
      });
      return { status: resp.status, body: await resp.json() };
    });
    assert.equal(r.status, 403);
    assert.equal(r.body.error, 'csrf');
    const direct = await page.evaluate(async () => (await fetch('/agents')).status);
    assert.equal(direct, 401, 'the API itself needs a bearer token');
  });

  await step('create the seed agent through the form; a bad URL is flagged next to its field', async () => {
    await page.click('nav >> text=Agents');
    await page.fill('#open', AGENT);
    await page.press('#open', 'Enter');
    await page.waitForURL(`${BASE}/ui/agents/${AGENT}`);
    assert.match(await page.textContent('main'), /no configuration yet/);
    await page.fill('#agent-name', 'Acme Support');
    await page.check('#enabled');

    await addAction('sms');
    await input(1, 'template').fill('Thanks for calling {agent_name}! Your reference number is {call_id}.');
    await until('the SMS preview', async () => (await field(1, 'template').locator('output').textContent())
      === 'Thanks for calling Acme Support! Your reference number is call_xyz789.');

    await addAction('webhook');
    await input(2, 'url').fill('not a url');
    await input(2, 'include_transcript').check();
    await input(2, 'include_recording_url').check();

    await addAction('email');
    await input(3, 'to').fill('{caller_email}');
    await input(3, 'subject').fill('Your call summary — {date}');
    await until('the subject preview', async () => (await field(3, 'subject').locator('output').textContent())
      === 'Your call summary — 2026-03-14');
    await input(3, 'body_template').selectOption('call_summary');
    await until('the built-in body preview', async () => (await field(3, 'body_template').locator('output').textContent())
      .startsWith('Hi John Smith,'));
    // An unknown variable is reported by the preview, before saving.
    await input(3, 'subject').fill('Your call {nope}');
    await until('the preview error', async () => (await field(3, 'subject').locator('output').textContent())
      .includes('unknown variable `nope`'));
    await input(3, 'subject').fill('Your call summary — {date}');
    await until('the subject preview again', async () => (await field(3, 'subject').locator('output').textContent())
      === 'Your call summary — 2026-03-14');
    await labelled();

    await page.click('#save');
    const err = page.locator('#a1-url-err');
    await err.waitFor({ state: 'visible' });
    assert.match(await err.textContent(), /not a valid URL/);
    assert.equal(await input(2, 'url').getAttribute('aria-invalid'), 'true');
    assert.equal(await page.evaluate(() => document.activeElement.id), 'a1-url', 'the bad field has the focus');
    assert.match(await page.textContent('#form-error'), /Not saved/);
    await page.locator('#actions > li:nth-child(2)').scrollIntoViewIfNeeded();
    await shot('agent-validation', page, false);

    await input(2, 'url').fill(RECEIVER);
    await save();
    assert.equal(page.url(), `${BASE}/ui/agents/${AGENT}?saved=1`);
    const types = await page.$$eval('#actions > li', (lis) => lis.map((li) => li.dataset.type));
    assert.deepEqual(types, ['sms', 'webhook', 'email']);
  });

  await step('reorder, add and remove actions; Save is the API\'s PATCH', async () => {
    await page.click('#actions > li:nth-child(3) [data-act="up"]');
    assert.equal(await page.evaluate(() => document.activeElement.getAttribute('aria-label')), 'Move action 2 up');
    await addAction('task');
    await input(4, 'provider').selectOption('github');
    await input(4, 'project').fill('acme/support');
    await input(4, 'labels').fill('call-back\nfollow-up');
    await page.click('#actions > li:nth-child(4) [data-act="remove"]');
    await save();
    let stored = await api('GET', `/agents/${AGENT}`, READ);
    assert.deepEqual(stored.json.voice_tools.post_call_follow_up.actions.map((a) => a.type), ['sms', 'email', 'webhook']);
    // Back to the seed's order, with the keyboard.
    await page.focus('#actions > li:nth-child(2) [data-act="down"]');
    await page.keyboard.press('Enter');
    await save();
    stored = await api('GET', `/agents/${AGENT}`, READ);
    const f = stored.json.voice_tools.post_call_follow_up;
    assert.equal(f.enabled, true);
    assert.equal(stored.json.name, 'Acme Support');
    assert.deepEqual(f.actions, [
      { type: 'sms', template: 'Thanks for calling {agent_name}! Your reference number is {call_id}.' },
      { type: 'webhook', url: RECEIVER, include_transcript: true, include_recording_url: true },
      { type: 'email', to: '{caller_email}', subject: 'Your call summary — {date}', body_template: 'call_summary' },
    ]);
    await until('the previews after the reload', async () => (await field(1, 'template').locator('output').textContent())
      .startsWith('Thanks for calling Acme Support!'));
    await tallShot('agent');
    await page.goto(`${BASE}/ui/agents`);
    assert.match(await page.textContent('table'), /agent_abc123\s+Acme Support\s+enabled\s+3/);
    await shot('agents');
  });

  await step('a pushed call shows up delivered on the Calls page', async () => {
    await pushCall(SEED_CALL.call_id);
    await openCall(SEED_CALL.call_id);
    const states = await settled(SEED_CALL.call_id);
    assert.deepEqual(states, ['fanned_out', 'delivered', 'delivered', 'delivered']);
    const got = await rust({ cmd: 'received' });
    assert.equal(got.count, 1);
    assert.equal(got.last.path, '/api/call-completed');
    assert.equal(got.last.body.call_id, SEED_CALL.call_id);
    assert.ok(got.last.body.transcript, 'include_transcript was saved');
    await labelled();
    await shot('calls');
  });

  await step('the editor previews the form on the agent\'s recent calls, sending nothing', async () => {
    const before = (await rust({ cmd: 'received' })).count;
    await page.goto(`${BASE}/ui/agents/${AGENT}`);
    await page.click('#preview-calls');
    await page.waitForSelector('#call-preview:not([hidden])');
    const text = await page.textContent('#call-preview-list');
    assert.ok(text.includes(`Call ${SEED_CALL.call_id}`), text);
    assert.ok(text.includes('sms: fires'), text);
    await labelled();
    assert.equal((await rust({ cmd: 'received' })).count, before, 'a preview sends nothing');
  });

  await step('opt-outs are added and removed on their page', async () => {
    await page.goto(`${BASE}/ui/opt-outs`);
    await page.selectOption('#oo-channel', 'sms');
    await page.fill('#oo-address', '+1 (415) 555-0199');
    await Promise.all([page.waitForEvent('load'), page.click('#opt-out-form button[type=submit]')]);
    assert.ok((await page.textContent('#opt-outs')).includes('+14155550199'), 'stored as E.164');
    await labelled();
    await page.click('.oo-remove');
    await Promise.all([page.waitForEvent('load'), page.click('dialog button[value="ok"]')]);
    assert.ok(await page.isVisible('#no-opt-outs'));
  });

  await step('a broken receiver makes a dead letter, inspected on its page', async () => {
    await rust({ cmd: 'receiver', status: 500, body: 'receiver down for maintenance' });
    await pushCall('call_broken_1');
    await openCall('call_broken_1');
    const states = await settled('call_broken_1');
    assert.deepEqual(states, ['fanned_out', 'delivered', 'dead', 'delivered']);

    await page.click('nav >> text=Dead letters');
    await page.selectOption('#f-action', 'webhook');
    await page.fill('#f-error', 'http_5xx');
    await page.click('form.filters button[type=submit]');
    await page.waitForURL(/action=webhook/);
    const rows = page.locator('table.dlq tbody tr');
    assert.equal(await rows.count(), 1);
    assert.match(await rows.first().textContent(), /call_broken_1/);
    await labelled();
    await shot('dead-letters');

    await rows.first().locator('td:nth-child(2) a').click();
    await page.waitForSelector('#dl-actions');
    const attempts = page.locator('table.attempts-table tbody tr');
    assert.equal(await attempts.count(), 2);
    assert.match(await attempts.nth(1).textContent(), /500/);
    assert.match(await attempts.nth(1).textContent(), /receiver down for maintenance/);
    const payload = await page.textContent('pre.payload');
    assert.match(payload, /"call_id": "call_broken_1"/);
    assert.match(payload, /"url": "http:\/\/127\.0\.0\.1/);
    await shot('dead-letter');
  });

  await step('after fixing the receiver, Replay delivers it', async () => {
    await rust({ cmd: 'receiver', status: 200, body: 'ok' });
    await page.click('button[data-one="replay"]');
    await page.waitForURL(/\/ui\/calls\?call_id=call_broken_1$/);
    await until('the replayed webhook to be delivered', async () => {
      const states = await page.$$eval('#call-live .job', (jobs) => jobs.map((j) => j.dataset.state));
      return states[2] === 'delivered';
    });
    assert.match(await page.textContent('#call-live'), /replayed by an operator/);
    const got = await rust({ cmd: 'received' });
    assert.equal(got.last.body.call_id, 'call_broken_1');
    await shot('call-replayed');
  });

  await step('purge asks first; Escape and Cancel keep the dead letter', async () => {
    await rust({ cmd: 'receiver', status: 500, body: 'down again' });
    await pushCall('call_broken_2');
    await openCall('call_broken_2');
    await settled('call_broken_2');
    await page.goto(`${BASE}/ui/dead-letters`);
    assert.equal(await page.locator('table.dlq tbody tr').count(), 1);
    await page.check('table.dlq tbody tr input[name="job"]');
    await page.click('button[data-bulk="purge-selected"]');
    const dialog = page.locator('dialog#confirm');
    await dialog.waitFor({ state: 'visible' });
    assert.match(await dialog.textContent(), /Purge 1 selected dead letter for good/);
    assert.equal(await page.evaluate(() => document.activeElement.textContent), 'Cancel');
    await shot('purge-confirm');
    await page.keyboard.press('Escape');
    await dialog.waitFor({ state: 'hidden' });
    await page.click('button[data-bulk="purge-selected"]');
    await dialog.locator('button[value="cancel"]').click();
    assert.equal(await page.locator('table.dlq tbody tr').count(), 1, 'still there');
    await page.click('button[data-bulk="purge-selected"]');
    await dialog.locator('button[value="ok"]').click();
    await page.waitForURL(/done=purged-1/);
    assert.equal(await page.textContent('#flash'), 'Purged 1 dead letter.');
    assert.equal(await page.locator('table.dlq').count(), 0);
    assert.equal((await api('GET', '/stats', READ)).json.dead, 0);
  });

  await step('replay a whole filter', async () => {
    await pushCall('call_broken_3');
    await pushCall('call_broken_4');
    await until('two new dead letters', async () => (await api('GET', '/stats', READ)).json.dead === 2);
    await rust({ cmd: 'receiver', status: 200, body: 'ok' });
    await page.goto(`${BASE}/ui/dead-letters?agent=${AGENT}`);
    assert.equal(await page.locator('table.dlq tbody tr').count(), 2);
    await page.click('button[data-bulk="replay-filter"]');
    const dialog = page.locator('dialog#confirm');
    // The confirmation carries the dry run's count.
    await dialog.waitFor({ state: 'visible' });
    assert.match(await dialog.textContent(), /Replay the 2 dead letters matching agent = agent_abc123\?/);
    assert.equal(await dialog.locator('button[value="ok"]').textContent(), 'Replay 2');
    assert.equal((await api('GET', '/stats', READ)).json.dead, 2, 'the dry run touched nothing');
    await dialog.locator('button[value="ok"]').click();
    await page.waitForURL(/done=replayed-2/);
    assert.equal(await page.textContent('#flash'), 'Replayed 2 dead letters; they are queued again.');
    const webhookState = async (id) => (await api('GET', `/calls/${id}`, READ)).json.actions[1].state.state;
    await until('both delivered', async () => (await webhookState('call_broken_3')) === 'delivered'
      && (await webhookState('call_broken_4')) === 'delivered');
  });

  await step('the overview shows depths, the last hour and the live workers', async () => {
    await page.click('nav >> text=Overview');
    await page.waitForSelector('#overview-live .stats');
    const text = await page.textContent('#overview-live');
    assert.match(text, /Dead letters\s*0/);
    assert.match(text, /Workers alive: 1 /);
    assert.ok(await page.locator('svg.chart rect.bar-ok').count() >= 1, 'a sampled minute in the chart');
    // It refreshes by itself.
    const before = await page.getAttribute('#overview-live time', 'datetime');
    await until('a refresh', async () => (await page.getAttribute('#overview-live time', 'datetime')) !== before, 12000);
    await shot('overview');
  });

  await step('dark mode is readable', async () => {
    const dark = await context.newPage();
    watch(dark);
    await dark.emulateMedia({ colorScheme: 'dark' });
    await dark.goto(`${BASE}/ui/`);
    const bg = await dark.evaluate(() => getComputedStyle(document.body).backgroundColor);
    assert.equal(bg, 'rgb(15, 19, 24)');
    await shot('overview-dark', dark);
    await dark.goto(`${BASE}/ui/calls?call_id=call_broken_1`);
    assert.match(await dark.textContent('#call-live'), /replayed by an operator/);
    await dark.close();
  });

  await step('logging out ends the session on the server', async () => {
    const [before] = (await context.cookies()).filter((c) => c.name === 'aftercall_session');
    await page.click('.who button[type=submit]');
    await page.waitForURL(`${BASE}/ui/login`);
    // The same cookie, put back (as a copy someone kept would be), opens nothing.
    await context.addCookies([before]);
    await page.goto(`${BASE}/ui/`);
    await page.waitForURL(/\/ui\/login/);
    await context.clearCookies();
  });

  await step('a read token can look but not change', async () => {
    await page.goto(`${BASE}/ui/login`);
    await page.fill('#token', READ);
    await page.press('#token', 'Enter');
    await page.waitForURL(`${BASE}/ui/`);
    await page.goto(`${BASE}/ui/agents/${AGENT}`);
    assert.equal(await page.isDisabled('#save'), true);
    assert.equal(await input(1, 'template').isDisabled(), true);
    await page.goto(`${BASE}/ui/dead-letters`);
    assert.match(await page.textContent('main'), /Replay and purge need an admin token/);
    const r = await page.evaluate(async () => {
      const token = document.querySelector('meta[name="csrf-token"]').content;
      const resp = await fetch('/ui/api/dead-letters/replay', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': token },
        body: '{"all":true}',
      });
      return resp.status;
    });
    assert.equal(r, 403, 'the API refuses a read token');
  });

  assert.deepEqual(problems, [], 'no script errors or policy violations in the pages');
  log('all steps passed');
} catch (e) {
  await shot('failure').catch(() => {});
  console.error(`[e2e] FAILED on ${page.url()}: ${e.stack || e}`);
  if (problems.length) console.error(`[e2e] page problems:\n${problems.join('\n')}`);
  process.exitCode = 1;
} finally {
  await context.close();
  process.exit();
}
