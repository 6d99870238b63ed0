package dev.fjord;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Collection;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ExecutionException;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AlterConfigOp;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.clients.admin.ConsumerGroupDescription;
import org.apache.kafka.clients.admin.DescribeClusterResult;
import org.apache.kafka.clients.admin.DescribeProducersResult;
import org.apache.kafka.clients.admin.GroupListing;
import org.apache.kafka.clients.admin.LogDirDescription;
import org.apache.kafka.clients.admin.NewPartitions;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.RecordsToDelete;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.admin.TransactionDescription;
import org.apache.kafka.clients.admin.TransactionListing;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.ElectionType;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.errors.ElectionNotNeededException;
import org.apache.kafka.common.errors.InvalidConfigurationException;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.errors.UnknownTopicOrPartitionException;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/** Kafka's AdminClient: topics, configs, groups, records, producers, transactions, cluster and log dirs. */
class AdminTest {
    static FjordBroker broker;
    static Admin admin;

    @BeforeAll
    static void start() throws Exception {
        broker = FjordBroker.start(Map.of(
                "offsets.topic.num.partitions", "4",
                "transaction.state.log.num.partitions", "4",
                "group.initial.rebalance.delay.ms", "0"));
        admin = Clients.admin(broker);
    }

    @AfterAll
    static void stop() throws Exception {
        admin.close();
        broker.close();
    }

    private static Throwable cause(ExecutionException e) {
        return e.getCause();
    }

    @Test
    void topicsAreCreatedWithConfigsDescribedGrownAndDeleted() throws Exception {
        admin.createTopics(List.of(new NewTopic("adm-t", 2, (short) 1)
                .configs(Map.of("retention.ms", "3600000", "cleanup.policy", "compact")))).all().get();
        ExecutionException dup = assertThrows(ExecutionException.class,
                () -> admin.createTopics(List.of(new NewTopic("adm-t", 1, (short) 1))).all().get());
        assertInstanceOf(TopicExistsException.class, cause(dup));
        ExecutionException bad = assertThrows(ExecutionException.class,
                () -> admin.createTopics(List.of(new NewTopic("adm-bad", 1, (short) 1)
                        .configs(Map.of("retention.ms", "soon")))).all().get());
        assertInstanceOf(InvalidConfigurationException.class, cause(bad));
        assertTrue(admin.listTopics().names().get().contains("adm-t"));

        // Kafka 4's describeTopics (DescribeTopicPartitions when the broker offers it).
        TopicDescription d = admin.describeTopics(List.of("adm-t")).allTopicNames().get().get("adm-t");
        assertEquals(2, d.partitions().size());
        assertEquals(1, d.partitions().get(0).leader().id());
        assertEquals(1, d.partitions().get(1).isr().size());
        assertFalse(d.isInternal());

        admin.createPartitions(Map.of("adm-t", NewPartitions.increaseTo(4))).all().get();
        d = admin.describeTopics(List.of("adm-t")).allTopicNames().get().get("adm-t");
        assertEquals(4, d.partitions().size());

        admin.deleteTopics(List.of("adm-t")).all().get();
        ExecutionException gone = assertThrows(ExecutionException.class,
                () -> admin.describeTopics(List.of("adm-t")).allTopicNames().get());
        assertInstanceOf(UnknownTopicOrPartitionException.class, cause(gone));
    }

    @Test
    void configsAreDescribedAndIncrementallyAltered() throws Exception {
        admin.createTopics(List.of(new NewTopic("adm-cfg", 1, (short) 1))).all().get();
        ConfigResource r = new ConfigResource(ConfigResource.Type.TOPIC, "adm-cfg");
        admin.incrementalAlterConfigs(Map.of(r, List.of(
                new AlterConfigOp(new ConfigEntry("retention.ms", "120000"), AlterConfigOp.OpType.SET)))).all().get();
        Config c = admin.describeConfigs(List.of(r)).all().get().get(r);
        assertEquals("120000", c.get("retention.ms").value());
        assertEquals(ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG, c.get("retention.ms").source());
        admin.incrementalAlterConfigs(Map.of(r, List.of(
                new AlterConfigOp(new ConfigEntry("retention.ms", ""), AlterConfigOp.OpType.DELETE)))).all().get();
        c = admin.describeConfigs(List.of(r)).all().get().get(r);
        assertTrue(c.get("retention.ms").isDefault(), c.get("retention.ms").toString());
        ConfigResource brokerRes = new ConfigResource(ConfigResource.Type.BROKER, "1");
        Config bc = admin.describeConfigs(List.of(brokerRes)).all().get().get(brokerRes);
        assertEquals("1", bc.get("node.id").value());
    }

    @Test
    void groupsAreListedDescribedOffsetsAlteredAndDeleted() throws Exception {
        admin.createTopics(List.of(new NewTopic("adm-g", 2, (short) 1))).all().get();
        try (KafkaProducer<String, String> p = Clients.producer(broker)) {
            for (int i = 0; i < 10; i++) {
                p.send(new ProducerRecord<>("adm-g", i % 2, null, "v" + i)).get();
            }
        }
        try (KafkaConsumer<String, String> c = Clients.consumer(broker,
                ConsumerConfig.GROUP_ID_CONFIG, "adm-group")) {
            c.subscribe(List.of("adm-g"));
            Clients.pollUntil(c, l -> l.size() >= 10);
            c.commitSync();
            Collection<GroupListing> groups = admin.listGroups().all().get();
            assertTrue(groups.stream().anyMatch(g -> g.groupId().equals("adm-group")), groups.toString());
            ConsumerGroupDescription g = admin.describeConsumerGroups(List.of("adm-group"))
                    .describedGroups().get("adm-group").get();
            assertEquals(1, g.members().size());
            assertEquals(2, g.members().iterator().next().assignment().topicPartitions().size());
        }
        TopicPartition tp0 = new TopicPartition("adm-g", 0);
        Map<TopicPartition, OffsetAndMetadata> offsets =
                admin.listConsumerGroupOffsets("adm-group").partitionsToOffsetAndMetadata().get();
        assertEquals(5L, offsets.get(tp0).offset());
        admin.alterConsumerGroupOffsets("adm-group", Map.of(tp0, new OffsetAndMetadata(2))).all().get();
        offsets = admin.listConsumerGroupOffsets("adm-group").partitionsToOffsetAndMetadata().get();
        assertEquals(2L, offsets.get(tp0).offset());
        admin.deleteConsumerGroups(List.of("adm-group")).all().get();
        offsets = admin.listConsumerGroupOffsets("adm-group").partitionsToOffsetAndMetadata().get();
        assertTrue(offsets.isEmpty(), offsets.toString());
    }

    @Test
    void recordsProducersAndTransactionsAreDescribed() throws Exception {
        admin.createTopics(List.of(new NewTopic("adm-tx", 1, (short) 1))).all().get();
        TopicPartition tp = new TopicPartition("adm-tx", 0);
        try (KafkaProducer<String, String> p = Clients.producer(broker,
                ProducerConfig.TRANSACTIONAL_ID_CONFIG, "adm-txn")) {
            p.initTransactions();
            p.beginTransaction();
            for (int i = 0; i < 4; i++) {
                p.send(new ProducerRecord<>("adm-tx", 0, null, "v" + i)).get();
            }
            Collection<TransactionListing> open = admin.listTransactions().all().get();
            assertTrue(open.stream().anyMatch(t -> t.transactionalId().equals("adm-txn")), open.toString());
            TransactionDescription t = admin.describeTransactions(List.of("adm-txn")).all().get().get("adm-txn");
            assertEquals(Set.of(tp), t.topicPartitions());
            DescribeProducersResult.PartitionProducerState ps =
                    admin.describeProducers(List.of(tp)).partitionResult(tp).get();
            assertEquals(1, ps.activeProducers().size());
            assertTrue(ps.activeProducers().get(0).currentTransactionStartOffset().isPresent());
            p.commitTransaction();
        }
        long low = admin.deleteRecords(Map.of(tp, RecordsToDelete.beforeOffset(2))).all()
                .thenApply(v -> 2L).get();
        assertEquals(2L, low);
        try (KafkaConsumer<String, String> c = Clients.consumer(broker)) {
            assertEquals(2L, c.beginningOffsets(List.of(tp)).get(tp));
        }
    }

    @Test
    void clusterLogDirsAndLeaderElection() throws Exception {
        DescribeClusterResult cl = admin.describeCluster();
        assertEquals(1, cl.nodes().get().size());
        assertEquals(1, cl.controller().get().id());
        assertFalse(cl.clusterId().get().isEmpty());

        admin.createTopics(List.of(new NewTopic("adm-ld", 1, (short) 1))).all().get();
        Map<String, LogDirDescription> dirs = admin.describeLogDirs(List.of(1)).allDescriptions().get().get(1);
        assertEquals(1, dirs.size(), dirs.toString());
        LogDirDescription dir = dirs.values().iterator().next();
        assertTrue(dir.replicaInfos().containsKey(new TopicPartition("adm-ld", 0)), dir.toString());
        assertTrue(dir.totalBytes().isPresent() && dir.usableBytes().getAsLong() > 0, dir.toString());

        // With one replica the preferred one already leads: Kafka's answer is ELECTION_NOT_NEEDED.
        TopicPartition tp = new TopicPartition("adm-ld", 0);
        java.util.Optional<Throwable> err =
                admin.electLeaders(ElectionType.PREFERRED, Set.of(tp)).partitions().get().get(tp);
        assertTrue(err.isPresent(), "an error for " + tp);
        assertInstanceOf(ElectionNotNeededException.class, err.get());
    }
}
