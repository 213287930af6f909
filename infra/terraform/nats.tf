# NATS with JetStream: three servers, file storage on a PVC each, and every write fsynced before
# it is acknowledged (sync_interval: always). With the default (sync every 2 minutes) Jepsen lost
# acknowledged writes when nodes crashed together (NATS 2.12.1 analysis, 2025): for an event log
# whose acknowledgements the API reports as done, that is not acceptable.
resource "helm_release" "nats" {
  name       = "${var.name}-nats"
  namespace  = kubernetes_namespace_v1.tunnox.metadata[0].name
  repository = "https://nats-io.github.io/k8s/helm/charts/"
  chart      = "nats"
  version    = var.nats_chart_version
  wait       = true

  values = [yamlencode({
    container = {
      image = { tag = var.nats_image_tag }
    }
    config = {
      cluster = {
        enabled  = true
        replicas = 3
      }
      jetstream = {
        enabled = true
        fileStore = {
          enabled = true
          pvc = merge(
            { enabled = true, size = var.nats_storage_size },
            var.storage_class == null ? {} : { storageClassName = var.storage_class },
          )
        }
        memoryStore = { enabled = false }
        merge = {
          sync_interval = "always"
        }
      }
    }
    # One server per node, so a node failure takes one replica of each stream.
    podTemplate = {
      topologySpreadConstraints = {
        "kubernetes.io/hostname" = {
          maxSkew           = 1
          whenUnsatisfiable = "DoNotSchedule"
        }
      }
    }
    podDisruptionBudget = { enabled = true }
    natsBox             = { enabled = true }
  })]
}
