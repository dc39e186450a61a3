// Exchange grants of the test authority: RFC 8693 token exchange and an
// Entra-shaped on-behalf-of request (RFC 7523 jwt-bearer with
// requested_token_use=on_behalf_of). Both verify the subject token (an
// id_token of the issuer the test runs: signature against SUBJECT_JWKS_FILE,
// `iss` = SUBJECT_ISSUER, `aud` in SUBJECT_AUDIENCE, `exp`) and issue an
// access token + refresh token for its `sub`.
//
// Counters in /_stats: `exchange` (requests that reached a handler) and
// `exchange_ok`. GET /_exchanges lists what each exchange saw (grant type,
// subject, client and its authentication method, parameters, and the
// SHA-256 of the subject token); POST /_reset clears it along with /_stats.

import crypto from 'node:crypto';
import fs from 'node:fs';

import { createLocalJWKSet, jwtVerify } from 'jose';

// oidc-provider refuses to fetch from special-use addresses (loopback
// included) to guard against SSRF; in tests every party is on loopback,
// refgate's JWKS (a client's jwks_uri) too. (Deep import, as in server.js.)
const { default: instance } = await import('oidc-provider/lib/helpers/weak_cache.js');

const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer';
const ID_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:id_token';
const JWT_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:jwt';

export function registerExchangeGrants(provider, { errors, stats, scopes, grantIds }) {
  instance(provider).configuration.fetch = (url, options) => {
    const { dispatcher, ...rest } = options;
    return globalThis.fetch(url, rest);
  };
  stats.exchange = 0;
  stats.exchange_ok = 0;
  const seen = [];

  let jwks = null;
  if (process.env.SUBJECT_JWKS_FILE) {
    jwks = createLocalJWKSet(JSON.parse(fs.readFileSync(process.env.SUBJECT_JWKS_FILE, 'utf8')));
  }
  const subjectIssuer = process.env.SUBJECT_ISSUER || '';
  const subjectAudiences = (process.env.SUBJECT_AUDIENCE || '').split(',').filter(Boolean);

  async function verifySubject(token) {
    if (!jwks) throw new errors.InvalidGrant('no subject issuer is configured (SUBJECT_JWKS_FILE)');
    try {
      const { payload } = await jwtVerify(token, jwks, {
        issuer: subjectIssuer,
        audience: subjectAudiences,
      });
      if (typeof payload.sub !== 'string' || !payload.sub) throw new Error('no sub');
      return payload;
    } catch (e) {
      throw new errors.InvalidGrant(`subject token rejected: ${e.code || e.message}`);
    }
  }

  async function issue(ctx, sub, scope, extra) {
    const { client } = ctx.oidc;
    const requested = (scope || 'openid offline_access api').split(' ').filter(Boolean);
    const unknown = requested.filter((s) => !scopes.includes(s));
    if (unknown.length) throw new errors.InvalidScope('requested scope is not allowed', unknown.join(' '));
    const scopeStr = requested.join(' ');
    const gty = ctx.oidc.params.grant_type;

    const grant = new provider.Grant({ accountId: sub, clientId: client.clientId });
    grant.addOIDCScope(scopeStr);
    const grantId = await grant.save();
    grantIds.add(grantId); // for /_revoke_all

    const rt = new provider.RefreshToken({
      accountId: sub, client, grantId, gty, scope: scopeStr, authTime: Math.floor(Date.now() / 1000),
    });
    ctx.oidc.entity('RefreshToken', rt);
    const refreshToken = await rt.save();
    const at = new provider.AccessToken({
      accountId: sub, client, grantId, gty, scope: grant.getOIDCScopeFiltered(new Set(requested)),
    });
    ctx.oidc.entity('AccessToken', at);
    const accessToken = await at.save();

    stats.exchange_ok += 1;
    seen.push({
      grant_type: gty,
      sub,
      client_id: client.clientId,
      client_auth: client.tokenEndpointAuthMethod,
      scope: ctx.oidc.params.scope || null,
      ...extra,
    });
    ctx.body = {
      access_token: accessToken,
      expires_in: at.expiration,
      refresh_token: refreshToken,
      scope: at.scope,
      token_type: at.tokenType,
      ...(gty === TOKEN_EXCHANGE ? { issued_token_type: 'urn:ietf:params:oauth:token-type:access_token' } : {}),
    };
  }

  const digest = (token) => crypto.createHash('sha256').update(token).digest('hex');

  provider.registerGrantType(TOKEN_EXCHANGE, async (ctx) => {
    stats.exchange += 1;
    const { params } = ctx.oidc;
    if (!params.subject_token) throw new errors.InvalidRequest('missing subject_token');
    if (![ID_TOKEN_TYPE, JWT_TOKEN_TYPE].includes(params.subject_token_type)) {
      throw new errors.InvalidRequest('subject_token_type must be an id_token or a JWT');
    }
    const subject = await verifySubject(params.subject_token);
    await issue(ctx, subject.sub, params.scope, {
      subject_token_sha256: digest(params.subject_token),
      subject_token_type: params.subject_token_type,
      audience: params.audience || null,
      resource: params.resource || null,
    });
  }, ['subject_token', 'subject_token_type', 'scope', 'audience', 'resource', 'requested_token_type']);

  provider.registerGrantType(JWT_BEARER, async (ctx) => {
    stats.exchange += 1;
    const { params } = ctx.oidc;
    if (params.requested_token_use !== 'on_behalf_of') {
      throw new errors.InvalidRequest('requested_token_use must be on_behalf_of');
    }
    if (!params.assertion) throw new errors.InvalidRequest('missing assertion');
    if (!params.scope) throw new errors.InvalidRequest('missing scope');
    const subject = await verifySubject(params.assertion);
    await issue(ctx, subject.sub, params.scope, {
      subject_token_sha256: digest(params.assertion),
      requested_token_use: params.requested_token_use,
    });
  }, ['assertion', 'requested_token_use', 'scope']);

  provider.use(async (ctx, next) => {
    if (ctx.path === '/_exchanges' && ctx.method === 'GET') {
      ctx.status = 200;
      ctx.body = seen;
      return undefined;
    }
    if (ctx.path === '/_reset' && ctx.method === 'POST') seen.length = 0;
    return next();
  });
}
