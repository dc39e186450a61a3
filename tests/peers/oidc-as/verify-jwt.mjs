// Verifies a JWT the way an upstream behind refgate would: with `jose`,
// using only the JWKS refgate publishes. Prints one JSON line:
// {"ok":true,"header":{...},"payload":{...}} or {"ok":false,"error":"..."}.
//
// node verify-jwt.mjs <jwks_uri> <issuer> <audience> <jwt> [typ]
// (audience `-`: the token has none to check; typ defaults to at+jwt)
import { createRemoteJWKSet, jwtVerify } from 'jose';

const [jwksUri, issuer, audience, jwt, typ = 'at+jwt'] = process.argv.slice(2);
const jwks = createRemoteJWKSet(new URL(jwksUri));
try {
  const { payload, protectedHeader } = await jwtVerify(jwt, jwks, {
    issuer,
    ...(audience === '-' ? {} : { audience }),
    typ,
    algorithms: ['ES256', 'EdDSA', 'RS256'],
  });
  console.log(JSON.stringify({ ok: true, header: protectedHeader, payload }));
} catch (e) {
  console.log(JSON.stringify({ ok: false, error: `${e.code ?? ''} ${e.message}` }));
}
