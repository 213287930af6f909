# Edges: agent sessions, tunnels, public ports and the node-to-node bridge, from NATS alone. Behind
# one L4 LoadBalancer for the control port and every public port (every edge serves every public
# port); other edges reach each one's bridge at its pod IP (--advertise).
#
# Shutdown: the pod first waits prestop_delay_seconds (preStop) so the load balancer stops sending
# it new visitors, then gets SIGTERM and drains (tunnox edge --drain-timeout): it takes no new
# sessions or tunnels, its agents move to other edges at once, running tunnels get up to the
# drain timeout; /readyz answers 503 meanwhile. The grace period covers all of that plus the
# process's own 15 s shutdown grace.
locals {
  edge_grace_seconds = var.prestop_delay_seconds + var.drain_timeout_seconds + 20
  public_ports       = range(var.public_port_min, var.public_port_max + 1)
}

resource "kubernetes_deployment_v1" "edge" {
  metadata {
    name      = "${var.name}-edge"
    namespace = kubernetes_namespace_v1.tunnox.metadata[0].name
    labels    = merge(local.common_labels, local.edge_labels)
  }
  spec {
    # The HPA owns the replica count once it runs (lifecycle below).
    replicas = var.edge_min_replicas
    selector {
      match_labels = local.edge_labels
    }
    strategy {
      type = "RollingUpdate"
      # One edge drains at a time, with its replacement already up.
      rolling_update {
        max_unavailable = 0
        max_surge       = 1
      }
    }
    template {
      metadata {
        labels      = merge(local.common_labels, local.edge_labels)
        annotations = local.scrape_annotations
      }
      spec {
        automount_service_account_token  = false
        termination_grace_period_seconds = local.edge_grace_seconds
        security_context {
          run_as_non_root = true
          run_as_user     = 10001
          run_as_group    = 10001
          fs_group        = 10001
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
        topology_spread_constraint {
          max_skew           = 1
          topology_key       = "kubernetes.io/hostname"
          when_unsatisfiable = "ScheduleAnyway"
          label_selector {
            match_labels = local.edge_labels
          }
        }
        container {
          name  = "edge"
          image = var.image
          args = concat(["edge"], local.cluster_args, [
            "--listen-host", "0.0.0.0",
            "--advertise", "$(POD_IP)",
            "--control-port", tostring(local.control_port),
            "--ws-port", tostring(local.ws_port),
            "--tls-cert", "${local.edge_tls_dir}/tls.crt",
            "--tls-key", "${local.edge_tls_dir}/tls.key",
            "--bridge-port", tostring(local.bridge_port),
            "--health", "0.0.0.0:${local.health_port}",
            "--drain-timeout", tostring(var.drain_timeout_seconds),
          ], var.allow_anonymous ? [] : ["--no-anonymous"])
          env {
            name = "POD_IP"
            value_from {
              field_ref {
                field_path = "status.podIP"
              }
            }
          }
          env {
            name = "TUNNOX_CLUSTER_SECRET"
            value_from {
              secret_key_ref {
                name = kubernetes_secret_v1.tunnox.metadata[0].name
                key  = "cluster-secret"
              }
            }
          }
          port {
            name           = "control"
            container_port = local.control_port
          }
          port {
            name           = "websocket"
            container_port = local.ws_port
          }
          port {
            name           = "bridge"
            container_port = local.bridge_port
          }
          port {
            name           = "health"
            container_port = local.health_port
          }
          port {
            name           = "metrics"
            container_port = local.metrics_port
          }
          lifecycle {
            pre_stop {
              exec {
                command = ["sleep", tostring(var.prestop_delay_seconds)]
              }
            }
          }
          # /readyz: 200 while serving, 503 from the moment the drain starts.
          readiness_probe {
            http_get {
              path = "/readyz"
              port = local.health_port
            }
            period_seconds    = 2
            failure_threshold = 1
          }
          # Not the health endpoint: it says 503 during a drain, which must not get the pod killed.
          liveness_probe {
            http_get {
              path = "/metrics"
              port = local.metrics_port
            }
            period_seconds    = 10
            failure_threshold = 6
          }
          # The edge listens once its view has caught up with the state stream.
          startup_probe {
            http_get {
              path = "/readyz"
              port = local.health_port
            }
            period_seconds    = 2
            failure_threshold = 150
          }
          resources {
            requests = {
              cpu    = var.resources["edge"].cpu_request
              memory = var.resources["edge"].memory_request
            }
            limits = merge(
              { memory = var.resources["edge"].memory_limit },
              var.resources["edge"].cpu_limit == null ? {} : { cpu = var.resources["edge"].cpu_limit },
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
          # The certificate every edge serves (TLS 1.3 on the control and WebSocket ports).
          volume_mount {
            name       = "tls"
            mount_path = local.edge_tls_dir
            read_only  = true
          }
        }
        volume {
          name = "tmp"
          empty_dir {}
        }
        volume {
          name = "tls"
          secret {
            secret_name = var.edge_tls_secret
            # Readable by the edge's group only (fs_group).
            default_mode = "0440"
          }
        }
      }
    }
  }
  lifecycle {
    ignore_changes = [spec[0].replicas]
  }
  depends_on = [helm_release.nats]
}

# L4 for agents and visitors: the control port and every public port. Local traffic policy keeps
# the visitor's address, which the edge's per-address limits (anonymous registrations, failed
# logins) count by.
resource "kubernetes_service_v1" "edge" {
  metadata {
    name      = "${var.name}-edge"
    namespace = kubernetes_namespace_v1.tunnox.metadata[0].name
    labels    = merge(local.common_labels, local.edge_labels)
    annotations = merge(
      { "external-dns.alpha.kubernetes.io/hostname" = var.edge_domain },
      var.edge_service_annotations,
    )
  }
  spec {
    type                    = "LoadBalancer"
    external_traffic_policy = "Local"
    selector                = local.edge_labels
    port {
      name        = "control"
      protocol    = "TCP"
      port        = local.control_port
      target_port = local.control_port
    }
    port {
      name        = "websocket"
      protocol    = "TCP"
      port        = local.ws_port
      target_port = local.ws_port
    }
    dynamic "port" {
      for_each = local.public_ports
      content {
        name        = "public-${port.value}"
        protocol    = "TCP"
        port        = port.value
        target_port = port.value
      }
    }
  }
}

resource "kubernetes_pod_disruption_budget_v1" "edge" {
  metadata {
    name      = "${var.name}-edge"
    namespace = kubernetes_namespace_v1.tunnox.metadata[0].name
    labels    = merge(local.common_labels, local.edge_labels)
  }
  spec {
    # One edge drains at a time: its agents need the others to move to.
    max_unavailable = 1
    selector {
      match_labels = local.edge_labels
    }
  }
}

resource "kubernetes_horizontal_pod_autoscaler_v2" "edge" {
  metadata {
    name      = "${var.name}-edge"
    namespace = kubernetes_namespace_v1.tunnox.metadata[0].name
    labels    = merge(local.common_labels, local.edge_labels)
  }
  spec {
    min_replicas = var.edge_min_replicas
    max_replicas = var.edge_max_replicas
    scale_target_ref {
      api_version = "apps/v1"
      kind        = "Deployment"
      name        = kubernetes_deployment_v1.edge.metadata[0].name
    }
    metric {
      type = "Resource"
      resource {
        name = "cpu"
        target {
          type                = "Utilization"
          average_utilization = var.edge_cpu_target_percent
        }
      }
    }
    behavior {
      # Scaling down drains an edge (its agents reconnect elsewhere): slowly, one at a time.
      scale_down {
        stabilization_window_seconds = 300
        select_policy                = "Min"
        policy {
          type           = "Pods"
          value          = 1
          period_seconds = 120
        }
      }
      scale_up {
        stabilization_window_seconds = 0
        select_policy                = "Max"
        policy {
          type           = "Pods"
          value          = 2
          period_seconds = 60
        }
      }
    }
  }
}
