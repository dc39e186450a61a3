use crate::common::*;

#[tokio::test]
async fn client_credentials_token_introspects_as_active() {
    let server = Refgate::start();
    let body = server.client_token("app", None).await;
    let token = str_of(&body, "access_token");
    assert!(token.starts_with("rgat_"));
    let view = server.introspect(token).await;
    assert_eq!(view["active"], true);
    assert_eq!(view["sub"], "app");
    assert_eq!(view["scope"], "photos.read photos.write reports.read");
}
