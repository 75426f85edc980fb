use super::*;

#[test]
fn pkce_challenge_is_unpadded_base64url_of_sha256() {
    // Expected value computed independently:
    // printf %s VERIFIER | openssl dgst -sha256 -binary | base64, then
    // made URL-safe without padding.
    assert_eq!(
        pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW-gFwTxXk-c"),
        "wLdixbQ6MGfCE9oosLNDxwoyNgF-IogBo7mvOOoFhUI"
    );
}

fn account() -> OAuthAccount {
    let spec: crate::config::OAuthAccountSpec = serde_yaml::from_str(
            "kind: oauth_account\nname: ms_mail\ntoken_url: https://login.microsoftonline.com/common/oauth2/v2.0/token\nclient_id: cid\nscope: https://graph.microsoft.com/Mail.Send\n",
        )
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
fn authorize_url_has_pkce_state_and_offline_access() {
    let login = begin(&account(), "http://localhost:8400/callback").unwrap();
    let url = url::Url::parse(&login.authorize_url).unwrap();
    assert_eq!(url.path(), "/common/oauth2/v2.0/authorize");
    let q: BTreeMap<String, String> = url.query_pairs().into_owned().collect();
    assert_eq!(
        q["scope"],
        "https://graph.microsoft.com/Mail.Send offline_access"
    );
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["code_challenge"], pkce_challenge(&login.verifier));
    assert_eq!(q["state"], login.state);
    assert_eq!(q["redirect_uri"], "http://localhost:8400/callback");
    assert_ne!(
        begin(&account(), "x").unwrap().state,
        login.state,
        "a fresh state per login"
    );
}

#[test]
fn consent_is_asked_outside_microsoft_and_authorize_params_are_added() {
    let q = |a: &OAuthAccount| -> BTreeMap<String, String> {
        let login = begin(a, "http://localhost:1/callback").unwrap();
        url::Url::parse(&login.authorize_url)
            .unwrap()
            .query_pairs()
            .into_owned()
            .collect()
    };
    let microsoft = account();
    assert!(
        !q(&microsoft).contains_key("prompt"),
        "Microsoft: as before"
    );
    let mut oidc = account();
    oidc.spec.token_url = "https://id.example/oauth/token".into();
    assert_eq!(q(&oidc)["prompt"], "consent");
    oidc.spec.authorize_params = [
        ("prompt".to_owned(), String::new()),
        ("login_hint".to_owned(), "me@example.com".to_owned()),
    ]
    .into();
    let params = q(&oidc);
    assert!(
        !params.contains_key("prompt"),
        "an empty value leaves it out"
    );
    assert_eq!(params["login_hint"], "me@example.com");
    oidc.spec.authorize_params = [("code_challenge".to_owned(), "x".to_owned())].into();
    assert!(matches!(
        begin(&oidc, "http://localhost:1/callback"),
        Err(LoginError::NotReady { .. })
    ));
}

#[test]
fn html_escape_covers_attributes_too() {
    assert_eq!(
        html_escape(r#"<a href="x">'&'</a>"#),
        "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
    );
}

#[test]
fn pasted_redirects_are_checked() {
    let login = begin(&account(), "http://localhost:8400/callback").unwrap();
    let ok = format!(
        "http://localhost:8400/callback?code=abc&state={}",
        login.state
    );
    assert_eq!(login.code_from_redirect(&ok).unwrap(), "abc");
    assert_eq!(
        login
            .code_from_redirect(&format!("?code=abc&state={}", login.state))
            .unwrap(),
        "abc"
    );
    assert!(matches!(
        login.code_from_redirect("http://localhost:8400/callback?code=abc&state=forged"),
        Err(LoginError::StateMismatch)
    ));
    let denied = format!("http://localhost:8400/callback?error=access_denied&error_description=the+user+canceled&state={}", login.state);
    let err = login.code_from_redirect(&denied).unwrap_err().to_string();
    assert_eq!(
        err,
        "authorization failed: access_denied: the user canceled"
    );
    assert!(matches!(
        login.code_from_redirect(&format!("http://localhost/?state={}", login.state)),
        Err(LoginError::NoCode)
    ));
    assert!(matches!(
        login.code_from_redirect("not a url"),
        Err(LoginError::BadRedirect(_))
    ));
}
