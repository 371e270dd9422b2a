# docker-compose.yml's kafka-access: applies Bazaar's Kafka principals and ACLs with
# infra/kafka/KafkaAccess.java (Java's single-file source launcher needs a JDK; the Kafka image
# has a JRE) and the Kafka client jars of the brokers' own image.
FROM apache/kafka:4.1.1 AS kafka

FROM eclipse-temurin:21-jdk
COPY --from=kafka /opt/kafka/libs /opt/kafka/libs
COPY infra/kafka/KafkaAccess.java infra/kafka/access.deploy.txt infra/kafka/access.schema-registry.txt /opt/bazaar/
ENTRYPOINT ["java", "-cp", "/opt/kafka/libs/*", "/opt/bazaar/KafkaAccess.java"]
