// Sign-in and consent pages for the authorization-code flow (refgate's
// connect flow). A person (or a test, over plain HTTP, or a headless browser)
// enters any account name and is signed in as that subject; consenting grants
// every scope the client asked for. "Deny" ends the flow with access_denied.

const escapeHtml = (s) => String(s).replace(/[&<>"']/g, (c) => ({
  '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;',
}[c]));

function readForm(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => resolve(new URLSearchParams(Buffer.concat(chunks).toString('utf8'))));
    req.on('error', reject);
  });
}

export const interactionsConfig = {
  url(ctx, interaction) {
    return `/interaction/${interaction.uid}`;
  },
};

export function installInteractions(provider, stats) {
  provider.use(async (ctx, next) => {
    const match = /^\/interaction\/([A-Za-z0-9_-]+)$/.exec(ctx.path);
    if (!match) return next();
    const { req, res } = ctx;
    if (ctx.method === 'GET') {
      const details = await provider.interactionDetails(req, res);
      const scope = details.params.scope || '';
      ctx.type = 'html';
      ctx.body = `<!doctype html><html><head><title>Sign in</title></head><body>
<h1>Sign in to the test authority</h1>
<p>${escapeHtml(details.params.client_id)} asks for: <span id="scope">${escapeHtml(scope)}</span></p>
<form method="post" action="/interaction/${match[1]}">
<label>Account <input id="login" name="login" autocomplete="off"></label>
<button id="allow" type="submit" name="decision" value="allow">Sign in and allow</button>
<button id="deny" type="submit" name="decision" value="deny">Deny</button>
</form></body></html>`;
      return undefined;
    }
    if (ctx.method === 'POST') {
      const form = await readForm(req);
      const details = await provider.interactionDetails(req, res);
      if (form.get('decision') === 'deny') {
        stats.authorize_denied = (stats.authorize_denied || 0) + 1;
        await provider.interactionFinished(req, res, {
          error: 'access_denied',
          error_description: 'the user denied the request',
        }, { mergeWithLastSubmission: false });
        ctx.respond = false;
        return undefined;
      }
      const accountId = (form.get('login') || '').trim() || 'test-user';
      const { params, prompt } = details;
      let grant = details.grantId
        ? await provider.Grant.find(details.grantId)
        : new provider.Grant({ accountId, clientId: params.client_id });
      if (!grant) grant = new provider.Grant({ accountId, clientId: params.client_id });
      const missing = prompt.details || {};
      grant.addOIDCScope(missing.missingOIDCScope ? missing.missingOIDCScope.join(' ') : (params.scope || ''));
      if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
      if (missing.missingResourceScopes) {
        for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes)) {
          grant.addResourceScope(indicator, scopes.join(' '));
        }
      }
      const grantId = await grant.save();
      stats.authorize_allowed = (stats.authorize_allowed || 0) + 1;
      await provider.interactionFinished(req, res, {
        login: { accountId },
        consent: { grantId },
      }, { mergeWithLastSubmission: false });
      ctx.respond = false;
      return undefined;
    }
    return next();
  });
}
