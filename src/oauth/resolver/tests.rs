use super::refresh::refresh_scope;
use super::*;

fn account(token_url: &str, scope: &str) -> OAuthAccount {
    let spec: crate::config::OAuthAccountSpec = serde_yaml::from_str(&format!(
        "kind: oauth_account\nname: a\ntoken_url: {token_url}\nclient_id: c\nscope: {scope}\n"
    ))
    .unwrap();
    OAuthAccount {
        spec,
        file: "a.yaml".into(),
        position: Default::default(),
        client_secret: None,
        extra: Default::default(),
    }
}

#[test]
fn microsoft_refreshes_keep_the_configured_scope() {
    let a = account(
        "https://login.microsoftonline.com/common/oauth2/v2.0/token",
        "offline_access Mail.Send",
    );
    // Microsoft spells the grant its own way and leaves offline_access out.
    assert_eq!(
        refresh_scope(&a, Some("https://graph.microsoft.com/Mail.Send")).as_deref(),
        Some("offline_access Mail.Send")
    );
}

#[test]
fn other_providers_get_no_more_than_was_granted() {
    let a = account(
        "https://id.example/token",
        "openid offline_access api:read api:write",
    );
    assert_eq!(
        refresh_scope(&a, Some("api:read openid profile")).as_deref(),
        Some("openid api:read")
    );
    assert_eq!(refresh_scope(&a, Some("other")), None, "RFC 6749 §6");
    assert_eq!(
        refresh_scope(&a, None).as_deref(),
        Some("openid offline_access api:read api:write"),
        "unknown grant: as configured"
    );
}
