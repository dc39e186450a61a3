// Downstream OAuth 2.0 authorization server for refgate end-to-end tests.
// Built on panva's oidc-provider; see README.md in this folder.
//
// stdout carries exactly one line, `LISTENING <port>`; everything else goes to stderr.

import http from 'node:http';

import { registerExchangeGrants } from './exchange-grants.js';

// oidc-provider prints its NOTICE lines through console.info (stdout). Keep stdout clean.
console.log = console.error;
console.info = console.error;
console.debug = console.error;

const { default: Provider, errors } = await import('oidc-provider');
const { interactionsConfig, installInteractions } = await import('./interactions.js');

const MINT_GRANT = 'urn:refgate:test:mint';
const DEFAULT_SCOPE = 'openid offline_access api';
const SCOPES = ['openid', 'offline_access', 'api'];

function intEnv(name, dflt) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return dflt;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0) {
    console.error(`invalid ${name}=${raw}`);
    process.exit(2);
  }
  return n;
}

const PORT = intEnv('PORT', 0);
const ACCESS_TTL = intEnv('ACCESS_TTL', 60);
const REFRESH_TTL = intEnv('REFRESH_TTL', 14 * 24 * 60 * 60);
const STORE_MAX = intEnv('STORE_MAX', 100000);

// oidc-provider's default in-memory adapter keeps everything in an LRU capped at
// 1000 entries, which silently evicts grants/tokens after a few hundred mints
// (-> spurious invalid_grant). Use the very same MemoryAdapter class, just over a
// bigger LRU store. (Deep imports into the pinned oidc-provider version; its
// package.json has no "exports" map.)
const { default: MemoryAdapter } = await import('oidc-provider/lib/adapters/memory_adapter.js');
const { default: LRU } = await import('oidc-provider/lib/helpers/lru.js');
const store = new LRU({ maxSize: Math.max(STORE_MAX, 1000) });
const memoryAdapter = (model) => new MemoryAdapter(model, store, 0);

// ---------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------
const GRANT_TYPES = ['refresh_token', MINT_GRANT];

function clientDefaults(c) {
  return {
    grant_types: GRANT_TYPES,
    response_types: [],
    redirect_uris: [],
    token_endpoint_auth_method: 'client_secret_basic',
    ...c,
  };
}

const clientsById = new Map();
for (const c of [
  { client_id: 'gateway', client_secret: 'gateway-secret', token_endpoint_auth_method: 'client_secret_basic' },
  { client_id: 'gateway-post', client_secret: 'gateway-post-secret', token_endpoint_auth_method: 'client_secret_post' },
]) clientsById.set(c.client_id, clientDefaults(c));

if (process.env.CLIENTS) {
  let extra;
  try {
    extra = JSON.parse(process.env.CLIENTS);
  } catch (e) {
    console.error(`CLIENTS is not valid JSON: ${e.message}`);
    process.exit(2);
  }
  if (!Array.isArray(extra)) extra = [extra];
  for (const c of extra) {
    if (!c || typeof c.client_id !== 'string') {
      console.error('CLIENTS entries must be objects with a client_id');
      process.exit(2);
    }
    clientsById.set(c.client_id, clientDefaults(c)); // same id overrides a static client
  }
}

// ---------------------------------------------------------------------------
// Test-control state
// ---------------------------------------------------------------------------
const stats = { refresh: 0, refresh_ok: 0, refresh_failed: 0, mint: 0, token_requests: 0 };
let mode = { mode: 'normal', delay_ms: 0 };
const grantIds = new Set(); // every grant created by the mint grant (for /_revoke_all)

const sleep = (ms) => new Promise((r) => { setTimeout(r, ms); });

function readBody(req, limit = 1 << 20) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (c) => {
      size += c.length;
      if (size > limit) {
        reject(new Error('body too large'));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function sendJson(ctx, status, body) {
  ctx.status = status;
  ctx.set('Cache-Control', 'no-store');
  ctx.body = body;
}

// ---------------------------------------------------------------------------
// Server + provider (issuer needs the real port, so listen first)
// ---------------------------------------------------------------------------
let handler = (req, res) => { res.statusCode = 503; res.end(); };
const server = http.createServer((req, res) => handler(req, res));
server.keepAliveTimeout = 5000;

await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(PORT, '127.0.0.1', resolve);
});
const { port } = server.address();
const issuer = `http://127.0.0.1:${port}`;

const provider = new Provider(issuer, {
  adapter: memoryAdapter,
  clients: [...clientsById.values()],
  scopes: SCOPES,
  rotateRefreshToken: true,
  interactions: interactionsConfig,
  features: {
    introspection: { enabled: true, allowedPolicy: async () => true },
    revocation: { enabled: true, allowedPolicy: async () => true },
    devInteractions: { enabled: false },
  },
  async findAccount(ctx, sub) {
    return { accountId: sub, async claims() { return { sub }; } };
  },
  ttl: {
    AccessToken: () => ACCESS_TTL,
    RefreshToken: () => REFRESH_TTL,
    Grant: () => Math.max(REFRESH_TTL, 14 * 24 * 60 * 60),
    IdToken: () => 3600,
    Session: () => 3600,
    Interaction: () => 3600,
  },
  async renderError(ctx, out) {
    ctx.type = 'json';
    ctx.body = out;
  },
});

// --- custom grant: urn:refgate:test:mint ----------------------------------
// Non-interactively creates a Grant for `sub` with `scope` and issues a real
// AccessToken + RefreshToken pair bound to that grant.
provider.registerGrantType(MINT_GRANT, async (ctx) => {
  const { client, params } = ctx.oidc;
  const sub = params.sub || 'test-user';
  const scope = params.scope || DEFAULT_SCOPE;
  const requested = scope.split(' ').filter(Boolean);
  const unknown = requested.filter((s) => !SCOPES.includes(s));
  if (unknown.length) {
    throw new errors.InvalidScope('requested scope is not allowed', unknown.join(' '));
  }
  const scopeStr = requested.join(' ');

  const grant = new provider.Grant({ accountId: sub, clientId: client.clientId });
  grant.addOIDCScope(scopeStr);
  const grantId = await grant.save();
  grantIds.add(grantId);

  const rt = new provider.RefreshToken({
    accountId: sub,
    client,
    grantId,
    gty: MINT_GRANT,
    scope: scopeStr,
    authTime: Math.floor(Date.now() / 1000),
  });
  ctx.oidc.entity('RefreshToken', rt);
  const refreshToken = await rt.save();

  const at = new provider.AccessToken({
    accountId: sub,
    client,
    grantId,
    gty: MINT_GRANT,
    scope: grant.getOIDCScopeFiltered(new Set(requested)),
  });
  ctx.oidc.entity('AccessToken', at);
  const accessToken = await at.save();

  ctx.body = {
    access_token: accessToken,
    expires_in: at.expiration,
    refresh_token: refreshToken,
    scope: at.scope,
    token_type: at.tokenType,
  };
}, ['sub', 'scope']);

// --- the W3C traceparent the token endpoint last received (tracing tests) --
let lastTraceparent = null;
provider.use(async (ctx, next) => {
  if (ctx.path === '/_traceparent' && ctx.method === 'GET') {
    return sendJson(ctx, 200, { last_traceparent: lastTraceparent });
  }
  if (ctx.path === '/token' && ctx.method === 'POST') {
    lastTraceparent = ctx.get('traceparent') || null;
  }
  return next();
});
// --- token exchange + on-behalf-of grants (exchange-grants.js) ------------
registerExchangeGrants(provider, { errors, stats, scopes: SCOPES, grantIds });

// --- test-control endpoints + token-endpoint fault injection ---------------
provider.use(async (ctx, next) => {
  const { path, method } = ctx;

  if (path === '/_stats' && method === 'GET') {
    return sendJson(ctx, 200, { ...stats, authorization_code: stats.authorization_code || 0 });
  }
  if (path === '/_reset' && method === 'POST') {
    for (const k of Object.keys(stats)) stats[k] = 0;
    return sendJson(ctx, 200, { ...stats });
  }
  if (path === '/_mode' && (method === 'POST' || method === 'GET')) {
    if (method === 'POST') {
      let body;
      try {
        const raw = await readBody(ctx.req);
        body = raw ? JSON.parse(raw) : {};
      } catch {
        return sendJson(ctx, 400, { error: 'invalid JSON' });
      }
      if (!['normal', 'down', 'error500', 'slow'].includes(body.mode)) {
        return sendJson(ctx, 400, { error: 'mode must be one of normal, down, error500, slow' });
      }
      const delay = body.delay_ms === undefined ? (body.mode === 'slow' ? 2000 : 0) : Number(body.delay_ms);
      if (!Number.isFinite(delay) || delay < 0) {
        return sendJson(ctx, 400, { error: 'delay_ms must be a non-negative number' });
      }
      mode = { mode: body.mode, delay_ms: delay };
      console.error(`[oidc-as] mode -> ${JSON.stringify(mode)}`);
    }
    return sendJson(ctx, 200, { ...mode });
  }
  if (path === '/_revoke_all' && method === 'POST') {
    let n = 0;
    for (const grantId of grantIds) {
      // Really delete: tokens (AT + RT, via the memory adapter's grant index) and the Grant.
      await provider.RefreshToken.adapter.revokeByGrantId(grantId);
      await provider.AccessToken.adapter.revokeByGrantId(grantId);
      const grant = await provider.Grant.find(grantId, { ignoreExpiration: true });
      if (grant) await grant.destroy();
      n += 1;
    }
    grantIds.clear();
    console.error(`[oidc-as] revoked ${n} grants`);
    return sendJson(ctx, 200, { revoked_grants: n });
  }

  if (!(path === '/token' && method === 'POST')) {
    return next();
  }

  // ---- token endpoint ----
  stats.token_requests += 1;

  if (mode.mode === 'down' || mode.mode === 'error500') {
    // We never hand this request to oidc-provider, so read the body ourselves
    // (to count the grant type).
    let grantType;
    try {
      grantType = new URLSearchParams(await readBody(ctx.req)).get('grant_type');
    } catch { /* ignore */ }
    if (grantType === 'refresh_token') { stats.refresh += 1; stats.refresh_failed += 1; }
    if (grantType === MINT_GRANT) stats.mint += 1;

    if (mode.mode === 'down') {
      ctx.respond = false;
      const { socket } = ctx.req;
      if (typeof socket.resetAndDestroy === 'function') socket.resetAndDestroy();
      else socket.destroy();
      return undefined;
    }
    return sendJson(ctx, 500, { error: 'server_error', error_description: 'simulated failure (mode error500)' });
  }

  if (mode.mode === 'slow' && mode.delay_ms > 0) {
    await sleep(mode.delay_ms);
  }

  let threw = true;
  try {
    await next();
    threw = false;
  } finally {
    const grantType = ctx.oidc?.params?.grant_type;
    if (grantType === 'refresh_token') {
      stats.refresh += 1;
      if (!threw && ctx.status === 200) stats.refresh_ok += 1;
      else stats.refresh_failed += 1;
    } else if (grantType === MINT_GRANT) {
      stats.mint += 1;
    } else if (grantType === 'authorization_code' && !threw && ctx.status === 200) {
      stats.authorization_code = (stats.authorization_code || 0) + 1;
    }
  }
  return undefined;
});

installInteractions(provider, stats);

provider.on('server_error', (ctx, err) => console.error('[oidc-as] server_error', err));
provider.on('grant.error', (ctx, err) => console.error(
  `[oidc-as] grant.error ${err.name}: ${err.error_description || err.message}${err.error_detail ? ` (${err.error_detail})` : ''}`,
));

// Client metadata is validated lazily by oidc-provider; fail fast on bad CLIENTS instead.
for (const id of clientsById.keys()) {
  try {
    await provider.Client.find(id);
  } catch (e) {
    console.error(`[oidc-as] invalid client ${id}: ${e.error_description || e.message}`);
    process.exit(2);
  }
}

handler = provider.callback();

// ---------------------------------------------------------------------------
// Shutdown
// ---------------------------------------------------------------------------
let stopping = false;
function shutdown(sig) {
  if (stopping) return;
  stopping = true;
  console.error(`[oidc-as] ${sig} received, shutting down`);
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));

process.stdout.write(`LISTENING ${port}\n`);
