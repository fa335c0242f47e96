# The MLflow tracking server's image (infra/k8s/mlflow.yaml): the project's pinned mlflow, with
# the Postgres driver for the backend store and boto3 for the S3 artifact store it proxies.
#
# Build from the repository root, tagged by commit (a tag, never a digest or :latest):
#   docker build -t REGISTRY/mrt-mlflow:$(git rev-parse --short HEAD) -f infra/docker/mlflow.Dockerfile .
#
# Never built: the machine this was written on has no container engine. psycopg2-binary, boto3
# and s3transfer are pinned here because the project itself does not need them (boto3 1.43.117
# matches the botocore pin of constraints.txt, which pins everything else).
FROM python:3.11-slim-bookworm

COPY constraints.txt /tmp/constraints.txt
RUN pip install --no-cache-dir -c /tmp/constraints.txt \
        mlflow psycopg2-binary==2.9.13 boto3==1.43.117 s3transfer==0.19.3 \
    && rm /tmp/constraints.txt \
    && useradd --uid 1000 --create-home mlflow

ENV MLFLOW_ENABLE_TELEMETRY=false DO_NOT_TRACK=1
USER 1000
WORKDIR /home/mlflow
EXPOSE 5000
ENTRYPOINT ["mlflow", "server"]
