package org.apache.kafka.common.utils;

/**
 * Where connect-file 4.3 looks for Kafka's version: kafka-clients 4.4 moved {@code AppInfoParser} to
 * {@code org.apache.kafka.common.utils.internals}, and connect-file 4.4.0 does not resolve here (see pom.xml), so
 * the file connectors' {@code version()} reaches the moved class through this one method, the only one they call.
 */
public final class AppInfoParser {
    private AppInfoParser() {
    }

    public static String getVersion() {
        return org.apache.kafka.common.utils.internals.AppInfoParser.getVersion();
    }
}
