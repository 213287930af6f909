# The Management API: stateless, any number of replicas; commands go to JetStream, queries to
# PostgreSQL. Reached through an Ingress on api_domain.
resource "kubernetes_deployment_v1" "api" {
  metadata {
    name      = "${var.name}-api"
    namespace = kubernetes_namespace_v1.tunnox.metadata[0].name
    labels    = merge(local.common_labels, local.api_labels)
  }
  spec {
    replicas = var.api_replicas
    selector {
      match_labels = local.api_labels
    }
    template {
      metadata {
        labels      = merge(local.common_labels, local.api_labels)
        annotations = local.scrape_annotations
      }
      spec {
        automount_service_account_token = false
        security_context {
          run_as_non_root = true
          run_as_user     = 10001
          run_as_group    = 10001
          seccomp_profile {
            type = "RuntimeDefault"
          }
        }
        dynamic "image_pull_secrets" {
          for_each = var.image_pull_secrets
          content {
            name = image_pull_secrets.value
          }
        }
        container {
          name  = "api"
          image = var.image
          args = concat(["api"], local.cluster_args, [
            "--api-host", "0.0.0.0",
            "--api-port", tostring(local.api_port),
            "--public-port-range", "${var.public_port_min}-${var.public_port_max}",
          ])
          env {
            name = "TUNNOX_DATABASE_URL"
            value_from {
              secret_key_ref {
                name = local.database_secret
                key  = "uri"
              }
            }
          }
          env {
            name = "TUNNOX_API_KEY"
            value_from {
              secret_key_ref {
                name = kubernetes_secret_v1.tunnox.metadata[0].name
                key  = "api-key"
              }
            }
          }
          port {
            name           = "api"
            container_port = local.api_port
          }
          port {
            name           = "metrics"
            container_port = local.metrics_port
          }
          # /readyz: the read-model database and the event log answer.
          readiness_probe {
            http_get {
              path = "/readyz"
              port = local.api_port
            }
            period_seconds    = 5
            failure_threshold = 3
          }
          liveness_probe {
            http_get {
              path = "/healthz"
              port = local.api_port
            }
            period_seconds    = 10
            failure_threshold = 6
          }
          startup_probe {
            http_get {
              path = "/healthz"
              port = local.api_port
            }
            period_seconds    = 2
            failure_threshold = 90
          }
          resources {
            requests = {
              cpu    = var.resources["api"].cpu_request
              memory = var.resources["api"].memory_request
            }
            limits = merge(
              { memory = var.resources["api"].memory_limit },
              var.resources["api"].cpu_limit == null ? {} : { cpu = var.resources["api"].cpu_limit },
            )
          }
          security_context {
            allow_privilege_escalation = false
            read_only_root_filesystem  = true
            capabilities {
              drop = ["ALL"]
            }
          }
          volume_mount {
            name       = "tmp"
            mount_path = "/tmp"
          }
        }
        volume {
          name = "tmp"
          empty_dir {}
        }
      }
    }
  }
  depends_on = [kubernetes_manifest.postgres]
}

resource "kubernetes_service_v1" "api" {
  metadata {
    name      = "${var.name}-api"
    namespace = kubernetes_namespace_v1.tunnox.metadata[0].name
    labels    = merge(local.common_labels, local.api_labels)
  }
  spec {
    selector = local.api_labels
    port {
      name        = "api"
      port        = local.api_port
      target_port = local.api_port
    }
  }
}

resource "kubernetes_ingress_v1" "api" {
  metadata {
    name        = "${var.name}-api"
    namespace   = kubernetes_namespace_v1.tunnox.metadata[0].name
    labels      = merge(local.common_labels, local.api_labels)
    annotations = var.api_ingress_annotations
  }
  spec {
    ingress_class_name = var.api_ingress_class
    dynamic "tls" {
      for_each = var.api_tls_secret == null ? [] : [var.api_tls_secret]
      content {
        hosts       = [var.api_domain]
        secret_name = tls.value
      }
    }
    rule {
      host = var.api_domain
      http {
        path {
          path      = "/"
          path_type = "Prefix"
          backend {
            service {
              name = kubernetes_service_v1.api.metadata[0].name
              port {
                number = local.api_port
              }
            }
          }
        }
      }
    }
  }
}

resource "kubernetes_pod_disruption_budget_v1" "api" {
  metadata {
    name      = "${var.name}-api"
    namespace = kubernetes_namespace_v1.tunnox.metadata[0].name
    labels    = merge(local.common_labels, local.api_labels)
  }
  spec {
    min_available = 1
    selector {
      match_labels = local.api_labels
    }
  }
}
