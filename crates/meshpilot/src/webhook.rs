//! The validating admission webhook (`POST /validate` on the secure port, with its TLS): the
//! API server sends each Istio object being created or updated as an `AdmissionReview`, and the
//! object is checked as the file and Kubernetes sources check it — the same conversion, the same
//! diagnostics — so a `kubectl apply` of an object meshpilot would refuse fails at once with the
//! field and the reason, instead of being stored and reported later. Like istiod's webhook it
//! checks each object on its own; references to other objects are `analyze`'s and the server's.
//! An allowed object's fields meshpilot does not read come back as the review's `warnings`,
//! which `kubectl` prints.

use axum::Json;
use axum::routing::post;
use serde_json::{Value, json};

use meshpilot_model::Origin;

/// The webhook's path.
pub const PATH: &str = "/validate";

/// The answer to one `AdmissionReview` request.
pub fn review(request: &Value) -> Value {
    let req = &request["request"];
    let uid = req["uid"].clone();
    let api_version = request["apiVersion"]
        .as_str()
        .unwrap_or("admission.k8s.io/v1")
        .to_string();
    let mut warnings = Vec::new();
    let (allowed, message) = match req["operation"].as_str() {
        // A deletion removes the object; there is nothing to validate.
        Some("DELETE") => (true, None),
        _ => {
            let object = req["object"].clone();
            let origin = Origin::File("admission request".to_string());
            match meshpilot_source::convert::convert_noting(object, &origin, &mut warnings) {
                Ok(_) => (true, None),
                Err(d) => {
                    let what = if d.object.is_unknown() {
                        String::new()
                    } else {
                        format!("{}: ", d.object)
                    };
                    let field = d
                        .field
                        .as_deref()
                        .filter(|f| !f.is_empty())
                        .map(|f| format!("field {f}: "))
                        .unwrap_or_default();
                    (false, Some(format!("{what}{field}{}", d.message)))
                }
            }
        }
    };
    let mut response = json!({ "uid": uid, "allowed": allowed });
    if let Some(message) = message {
        response["status"] = json!({ "code": 400, "reason": "BadRequest", "message": message });
    }
    if !warnings.is_empty() {
        let messages: Vec<&str> = warnings.iter().map(|w| w.message.as_str()).collect();
        response["warnings"] = json!(messages);
    }
    json!({ "apiVersion": api_version, "kind": "AdmissionReview", "response": response })
}

/// The webhook as a router to serve beside the secure port's gRPC services.
pub fn router() -> axum::Router {
    axum::Router::new().route(
        PATH,
        post(|Json(request): Json<Value>| async move { Json(review(&request)) }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(object: Value, operation: &str) -> Value {
        json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": { "uid": "u-1", "operation": operation, "object": object },
        })
    }

    fn vs(weight: i64) -> Value {
        json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": { "name": "reviews", "namespace": "default" },
            "spec": { "hosts": ["reviews"], "http": [{ "route": [
                { "destination": { "host": "reviews" }, "weight": weight }
            ]}]},
        })
    }

    #[test]
    fn a_valid_object_is_allowed_and_an_invalid_one_denied_naming_the_field() {
        let ok = review(&admission(vs(100), "CREATE"));
        assert_eq!(ok["response"]["allowed"], true);
        assert_eq!(ok["response"]["uid"], "u-1");
        let bad = review(&admission(vs(-5), "UPDATE"));
        assert_eq!(bad["response"]["allowed"], false);
        let message = bad["response"]["status"]["message"]
            .as_str()
            .unwrap_or_default();
        assert!(
            message.contains("VirtualService default/reviews")
                && message.contains("spec.http[0].route[0].weight"),
            "{message}"
        );
        let gone = review(&admission(Value::Null, "DELETE"));
        assert_eq!(gone["response"]["allowed"], true);
    }

    #[test]
    fn a_field_meshpilot_does_not_read_is_allowed_with_a_warning() {
        let mut object = vs(100);
        object["spec"]["tcp"] = json!([{
            "match": [{ "port": 5432, "sourceNamespace": "shop" }],
            "route": [{ "destination": { "host": "db" } }],
        }]);
        let r = review(&admission(object, "CREATE"));
        assert_eq!(r["response"]["allowed"], true);
        assert_eq!(
            r["response"]["warnings"],
            json!(["`spec.tcp[0].match[0].sourceNamespace` is not read by meshpilot: ignored"])
        );
        let plain = review(&admission(vs(100), "CREATE"));
        assert!(plain["response"].get("warnings").is_none(), "{plain}");
    }
}
