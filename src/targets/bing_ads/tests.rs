//! Unit tests of the Bing Ads target (`targets/bing_ads/mod.rs`).

    use super::*;

    fn response(status: u16, body: &str) -> Response {
        Response {
            status,
            headers: vec![("trackingid".into(), "t-1".into())],
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn partial_errors_fail_exactly_the_indexed_conversion() {
        let body = r#"{"PartialErrors":[{"Code":5616,"Details":null,"ErrorCode":"ConversionTimeEarlierThanClickTime","FieldPath":null,"ForwardCompatibilityMap":null,"Index":1,"Message":"The conversion time must be later than the click time.","Type":"BatchError"}]}"#;
        let out = classify_batch(
            &response(200, body),
            3,
            Duration::from_secs(600),
            CALL_RATE_WAIT,
        );
        assert!(out[0].is_delivered() && out[2].is_delivered());
        match &out[1] {
            Outcome::Failed {
                code,
                items,
                reference,
                ..
            } => {
                assert_eq!(code.as_deref(), Some("ConversionTimeEarlierThanClickTime"));
                assert_eq!(items[0].code, Some(5616));
                assert_eq!(reference.as_deref(), Some("t-1"));
            }
            other => panic!("{other:?}"),
        }
        for empty in [r#"{"PartialErrors":[]}"#, r#"{"PartialErrors":null}"#, "{}"] {
            assert!(
                classify(&response(200, empty), Duration::from_secs(1)).is_delivered(),
                "{empty}"
            );
        }
    }

    #[test]
    fn a_partial_error_naming_no_conversion_fails_every_one_of_the_batch() {
        // Without a usable `Index` the error was put on conversion 0,
        // which may have been taken, and the failed one counted delivered.
        for error in [
            r#"{"Code":5616,"ErrorCode":"ConversionTimeEarlierThanClickTime","Message":"late"}"#,
            r#"{"Code":5616,"ErrorCode":"ConversionTimeEarlierThanClickTime","Index":7,"Message":"late"}"#,
        ] {
            let body = format!(r#"{{"PartialErrors":[{error}]}}"#);
            let out = classify_batch(
                &response(200, &body),
                3,
                Duration::from_secs(600),
                CALL_RATE_WAIT,
            );
            for o in &out {
                match o {
                    Outcome::Failed { code, message, .. } => {
                        assert_eq!(code.as_deref(), Some("ConversionTimeEarlierThanClickTime"));
                        assert!(message.contains("without naming which"), "{message}");
                    }
                    other => panic!("{error}: {other:?}"),
                }
            }
        }
        // Named errors still fail exactly their conversion; beside an
        // unnamed one, a named conversion keeps its own error.
        let body = r#"{"PartialErrors":[{"Code":1,"Index":1,"Message":"bad"}]}"#;
        let out = classify_batch(
            &response(200, body),
            3,
            Duration::from_secs(600),
            CALL_RATE_WAIT,
        );
        assert!(out[0].is_delivered() && !out[1].is_delivered() && out[2].is_delivered());
        let body = r#"{"PartialErrors":[{"Code":1,"Index":1,"Message":"bad"},{"Code":2,"Message":"which?"}]}"#;
        let out = classify_batch(
            &response(200, body),
            2,
            Duration::from_secs(600),
            CALL_RATE_WAIT,
        );
        assert!(matches!(&out[1], Outcome::Failed { message, .. } if message.contains("bad")));
        assert!(matches!(&out[0], Outcome::Failed { message, .. } if message.contains("which?")));
    }

    #[test]
    fn faults_are_classified_by_their_codes() {
        let cap = Duration::from_secs(600);
        let expired = r#"{"TrackingId":"x","Type":"AdApiFaultDetail","Errors":[{"Code":109,"Detail":null,"ErrorCode":"AuthenticationTokenExpired","Message":"Authentication token expired."}]}"#;
        assert!(matches!(
            classify(&response(401, expired), cap),
            Outcome::RefreshAndRetry { .. }
        ));
        let rate = r#"{"TrackingId":"x","Type":"AdApiFaultDetail","Errors":[{"Code":117,"ErrorCode":"CallRateExceeded","Message":"Too many calls."}]}"#;
        assert!(matches!(
            classify(&response(429, rate), cap),
            Outcome::Retry { delay: RetryDelay::After(d), .. } if d == CALL_RATE_WAIT
        ));
        let op = r#"{"TrackingId":"x","Type":"ApiFaultDetail","BatchErrors":[],"OperationErrors":[{"Code":5600,"Details":null,"ErrorCode":"OfflineConversionsNullOrEmpty","Message":"empty"}]}"#;
        assert!(matches!(
            classify(&response(400, op), cap),
            Outcome::Failed { code: Some(c), .. } if c == "OfflineConversionsNullOrEmpty"
        ));
        let denied = r#"{"TrackingId":"x","Type":"AdApiFaultDetail","Errors":[{"Code":106,"ErrorCode":"UserIsNotAuthorized","Message":"no"}]}"#;
        assert!(matches!(
            classify(&response(403, denied), cap),
            Outcome::Failed { .. }
        ));
        let internal = r#"{"TrackingId":"x","Type":"AdApiFaultDetail","Errors":[{"Code":0,"ErrorCode":"InternalError","Message":"oops"}]}"#;
        assert!(matches!(
            classify(&response(500, internal), cap),
            Outcome::Retry {
                delay: RetryDelay::Backoff,
                ..
            }
        ));
        let wrapped = r#"{"ApplicationFault":{"Type":"AdApiFaultDetail","Errors":[{"Code":105,"ErrorCode":"InvalidCredentials","Message":"bad"}]}}"#;
        assert!(matches!(
            classify(&response(401, wrapped), cap),
            Outcome::RefreshAndRetry { .. }
        ));
    }
