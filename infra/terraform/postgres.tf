# PostgreSQL for the read models, through the CloudNativePG operator: a primary and streaming
# replicas with automatic failover, the app user's URI in the secret <cluster>-app.

resource "helm_release" "cloudnative_pg" {
  count            = var.install_cnpg_operator ? 1 : 0
  name             = "cloudnative-pg"
  namespace        = "cnpg-system"
  create_namespace = true
  repository       = "https://cloudnative-pg.github.io/charts"
  chart            = "cloudnative-pg"
  version          = var.cnpg_chart_version
  wait             = true
}

locals {
  postgres_cluster = "${var.name}-pg"
  postgres_backup = var.postgres_backup == null ? {} : {
    backup = {
      retentionPolicy = var.postgres_backup.retention
      barmanObjectStore = merge(
        {
          destinationPath = var.postgres_backup.destination_path
          s3Credentials = {
            accessKeyId     = { name = var.postgres_backup.secret_name, key = "ACCESS_KEY_ID" }
            secretAccessKey = { name = var.postgres_backup.secret_name, key = "ACCESS_SECRET_KEY" }
          }
          wal = { compression = "gzip" }
        },
        var.postgres_backup.endpoint_url == null ? {} : { endpointURL = var.postgres_backup.endpoint_url },
      )
    }
  }
}

# The Cluster custom resource needs the operator's CRDs at plan time: on a fresh cluster apply
# the operator first (README.md: terraform apply -target=helm_release.cloudnative_pg).
resource "kubernetes_manifest" "postgres" {
  depends_on = [helm_release.cloudnative_pg]
  manifest = {
    apiVersion = "postgresql.cnpg.io/v1"
    kind       = "Cluster"
    metadata = {
      name      = local.postgres_cluster
      namespace = kubernetes_namespace_v1.tunnox.metadata[0].name
      labels    = local.common_labels
    }
    spec = merge(
      {
        instances = var.postgres_instances
        storage = merge(
          { size = var.postgres_storage_size },
          var.storage_class == null ? {} : { storageClass = var.storage_class },
        )
        bootstrap = {
          initdb = {
            database = "tunnox"
            owner    = "tunnox"
          }
        }
        # Spread the instances over nodes.
        affinity = {
          enablePodAntiAffinity = true
          topologyKey           = "kubernetes.io/hostname"
        }
      },
      local.postgres_backup,
    )
  }
}

resource "kubernetes_manifest" "postgres_backup_schedule" {
  count = var.postgres_backup == null ? 0 : 1
  manifest = {
    apiVersion = "postgresql.cnpg.io/v1"
    kind       = "ScheduledBackup"
    metadata = {
      name      = "${local.postgres_cluster}-daily"
      namespace = kubernetes_namespace_v1.tunnox.metadata[0].name
      labels    = local.common_labels
    }
    spec = {
      schedule = var.postgres_backup.schedule
      cluster  = { name = kubernetes_manifest.postgres.manifest.metadata.name }
    }
  }
}
