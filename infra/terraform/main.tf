# Tunnox on Kubernetes: NATS JetStream (3 servers, official chart), PostgreSQL (CloudNativePG),
# and the three roles as Deployments of the one image. README.md says how to apply it; the test
# (test/infra/terraform.test.ts) checks the wiring below against the code's flags.

resource "kubernetes_namespace_v1" "tunnox" {
  metadata {
    name = var.namespace
  }
}

# The cluster secret and the admin API key, as environment variables of the roles.
resource "kubernetes_secret_v1" "tunnox" {
  metadata {
    name      = "${var.name}-secrets"
    namespace = kubernetes_namespace_v1.tunnox.metadata[0].name
    labels    = local.common_labels
  }
  data = {
    cluster-secret = var.cluster_secret
    api-key        = var.api_key
  }
}

locals {
  common_labels = {
    "app.kubernetes.io/name"       = "tunnox"
    "app.kubernetes.io/instance"   = var.name
    "app.kubernetes.io/managed-by" = "terraform"
  }
  # Selectors use only these two (stable across upgrades) plus the component.
  selector = {
    "app.kubernetes.io/name"     = "tunnox"
    "app.kubernetes.io/instance" = var.name
  }
  edge_labels      = merge(local.selector, { "app.kubernetes.io/component" = "edge" })
  api_labels       = merge(local.selector, { "app.kubernetes.io/component" = "api" })
  projector_labels = merge(local.selector, { "app.kubernetes.io/component" = "projector" })

  # The NATS chart's client Service is named after the release.
  nats_url = "nats://${helm_release.nats.name}.${helm_release.nats.namespace}.svc.cluster.local:4222"
  # CloudNativePG writes the app user's connection URI into the secret <cluster>-app.
  database_secret = "${local.postgres_cluster}-app"

  stream         = "TUNNOX_EVENTS"
  subject_prefix = "tunnox"

  control_port = 8080
  api_port     = 9000
  metrics_port = 9090
  health_port  = 8081
  bridge_port  = 50052
  # WebSocket agents (wss://EDGE_DOMAIN:8443/tunnox); not tunnox's default 8081, the health port here.
  ws_port = 8443
  # Where the edge TLS secret (var.edge_tls_secret) is mounted.
  edge_tls_dir = "/etc/tunnox/tls"

  # Flags every role shares: where the event log is, and GET /metrics on the pod's address (for
  # Prometheus; the port is not in any Service).
  cluster_args = [
    "--nats", local.nats_url,
    "--stream", local.stream,
    "--subject-prefix", local.subject_prefix,
    "--stream-replicas", tostring(var.stream_replicas),
    "--metrics-host", "0.0.0.0",
    "--metrics-port", tostring(local.metrics_port),
  ]

  # Prometheus' kubernetes_sd "pod" role conventions.
  scrape_annotations = {
    "prometheus.io/scrape" = "true"
    "prometheus.io/port"   = tostring(local.metrics_port)
    "prometheus.io/path"   = "/metrics"
  }
}
