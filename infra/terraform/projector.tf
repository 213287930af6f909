# The projector: folds the event log into PostgreSQL and writes the edges' state stream. Several
# replicas share one checkpoint (each event applies once); the lowest live one sweeps the sessions
# of dead edges.
resource "kubernetes_deployment_v1" "projector" {
  metadata {
    name      = "${var.name}-projector"
    namespace = kubernetes_namespace_v1.tunnox.metadata[0].name
    labels    = merge(local.common_labels, local.projector_labels)
  }
  spec {
    replicas = var.projector_replicas
    selector {
      match_labels = local.projector_labels
    }
    template {
      metadata {
        labels      = merge(local.common_labels, local.projector_labels)
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
          name  = "projector"
          image = var.image
          args = concat(["projector"], local.cluster_args, [
            "--health", "0.0.0.0:${local.health_port}",
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
          port {
            name           = "health"
            container_port = local.health_port
          }
          port {
            name           = "metrics"
            container_port = local.metrics_port
          }
          # /healthz: 503 once the projection halted or NATS is gone (the process then exits 1).
          readiness_probe {
            http_get {
              path = "/healthz"
              port = local.health_port
            }
            period_seconds    = 5
            failure_threshold = 3
          }
          # GET /metrics answers from the first moment to the last: the process is alive.
          liveness_probe {
            http_get {
              path = "/metrics"
              port = local.metrics_port
            }
            period_seconds    = 10
            failure_threshold = 6
          }
          resources {
            requests = {
              cpu    = var.resources["projector"].cpu_request
              memory = var.resources["projector"].memory_request
            }
            limits = merge(
              { memory = var.resources["projector"].memory_limit },
              var.resources["projector"].cpu_limit == null ? {} : { cpu = var.resources["projector"].cpu_limit },
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

resource "kubernetes_pod_disruption_budget_v1" "projector" {
  metadata {
    name      = "${var.name}-projector"
    namespace = kubernetes_namespace_v1.tunnox.metadata[0].name
    labels    = merge(local.common_labels, local.projector_labels)
  }
  spec {
    min_available = 1
    selector {
      match_labels = local.projector_labels
    }
  }
}
