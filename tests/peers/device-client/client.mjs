// A device (RFC 8628) driven by openid-client: reads refgate's metadata,
// asks for a device authorization, and polls until it gets tokens or an
// error. Writes one JSON object per line on stdout:
//   {"event":"authorization", ...the device authorization response}
//   {"event":"poll","at":ms,"status":N,"error":"authorization_pending"|null}
//   {"event":"tokens", access_token, refresh_token, scope, expires_in}
//   {"event":"error","error":"access_denied", "message": ...}
// Usage: node client.mjs <refgate base URL> <client id> <secret> [scope]
import * as client from 'openid-client';

const [base, clientId, secret, scope] = process.argv.slice(2);
const started = Date.now();
const out = (line) => process.stdout.write(JSON.stringify(line) + '\n');

try {
  const metadata = await (await fetch(`${base}/.well-known/oauth-authorization-server`)).json();
  const config = new client.Configuration(
    metadata,
    clientId,
    undefined,
    client.ClientSecretBasic(secret),
  );
  client.allowInsecureRequests(config);
  // Records every poll the library makes, and what refgate answered.
  config[client.customFetch] = async (url, options) => {
    const response = await fetch(url, options);
    if (String(url).endsWith('/oauth2/token')) {
      const body = await response.clone().json().catch(() => ({}));
      out({
        event: 'poll',
        at: Date.now() - started,
        status: response.status,
        error: body.error ?? null,
      });
    }
    return response;
  };
  const authorization = await client.initiateDeviceAuthorization(
    config,
    scope ? { scope } : {},
  );
  out({ event: 'authorization', ...authorization });
  const tokens = await client.pollDeviceAuthorizationGrant(config, authorization);
  out({
    event: 'tokens',
    access_token: tokens.access_token,
    refresh_token: tokens.refresh_token ?? null,
    scope: tokens.scope ?? null,
    expires_in: tokens.expires_in ?? null,
  });
} catch (e) {
  out({ event: 'error', error: e.error ?? e.code ?? e.name, message: String(e.message) });
  process.exitCode = 1;
}
