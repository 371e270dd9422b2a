// Applies Bazaar's Kafka principals and ACLs (the lines `bazaar access` prints) to a running
// cluster, as its super user: every `user NAME PASSWORD` line upserts NAME's SCRAM-SHA-512
// credential, every `allow PRINCIPAL RESOURCE PATTERN NAME OPERATION` line creates that allowing
// ACL (creating one that exists changes nothing). A password of `-`, or any password when
// BAZAAR_KAFKA_PASSWORD_<NAME> is set (NAME upper-cased, `-` as `_`), comes from that variable.
// Grants are only ever added: one dropped from the declarations is removed by hand
// (kafka-acls --remove). It connects as the super user `admin` (SASL/PLAIN), whose password is
// BAZAAR_KAFKA_ADMIN_PASSWORD. Run by `kafkactl.sh access` and docker-compose.yml's
// kafka-access with the Kafka jars on the class path (Java's single-file source launcher):
//   java -cp 'libs/*' KafkaAccess.java BOOTSTRAP FILE|- [FILE...]
import java.io.BufferedReader;
import java.io.FileReader;
import java.io.InputStreamReader;
import java.io.Reader;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Properties;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.ScramCredentialInfo;
import org.apache.kafka.clients.admin.ScramMechanism;
import org.apache.kafka.clients.admin.UserScramCredentialAlteration;
import org.apache.kafka.clients.admin.UserScramCredentialUpsertion;
import org.apache.kafka.common.acl.AccessControlEntry;
import org.apache.kafka.common.acl.AclBinding;
import org.apache.kafka.common.acl.AclOperation;
import org.apache.kafka.common.acl.AclPermissionType;
import org.apache.kafka.common.resource.PatternType;
import org.apache.kafka.common.resource.ResourcePattern;
import org.apache.kafka.common.resource.ResourceType;

public class KafkaAccess {
  static final int ITERATIONS = 8192;

  public static void main(String[] args) throws Exception {
    String adminPassword = System.getenv("BAZAAR_KAFKA_ADMIN_PASSWORD");
    if (args.length < 2 || adminPassword == null || adminPassword.isEmpty()) {
      System.err.println(
          "usage: BAZAAR_KAFKA_ADMIN_PASSWORD=... KafkaAccess BOOTSTRAP FILE|- [FILE...]");
      System.exit(2);
    }
    List<UserScramCredentialAlteration> users = new ArrayList<>();
    List<AclBinding> acls = new ArrayList<>();
    for (int file = 1; file < args.length; file++) {
      read(args[file], users, acls);
    }
    Properties config = new Properties();
    config.put("bootstrap.servers", args[0]);
    config.put("security.protocol", "SASL_PLAINTEXT");
    config.put("sasl.mechanism", "PLAIN");
    config.put(
        "sasl.jaas.config",
        "org.apache.kafka.common.security.plain.PlainLoginModule required username=\"admin\""
            + " password=\""
            + adminPassword
            + "\";");
    config.put("request.timeout.ms", "20000");
    try (Admin admin = Admin.create(config)) {
      if (!users.isEmpty()) {
        admin.alterUserScramCredentials(users).all().get(60, TimeUnit.SECONDS);
      }
      if (!acls.isEmpty()) {
        admin.createAcls(acls).all().get(60, TimeUnit.SECONDS);
      }
    }
    System.err.println(
        "kafkactl: " + users.size() + " principal(s) and " + acls.size() + " ACL(s) applied");
  }

  static void read(String path, List<UserScramCredentialAlteration> users, List<AclBinding> acls)
      throws Exception {
    try (Reader source =
            path.equals("-") ? new InputStreamReader(System.in) : new FileReader(path);
        BufferedReader lines = new BufferedReader(source)) {
      String line;
      int number = 0;
      while ((line = lines.readLine()) != null) {
        number++;
        line = line.strip();
        if (line.isEmpty() || line.startsWith("#")) {
          continue;
        }
        String[] f = line.split("\\s+");
        if (f[0].equals("user") && f.length == 3) {
          users.add(
              new UserScramCredentialUpsertion(
                  f[1],
                  new ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, ITERATIONS),
                  password(f[1], f[2])));
        } else if (f[0].equals("allow") && f.length == 6) {
          acls.add(
              new AclBinding(
                  new ResourcePattern(
                      ResourceType.valueOf(f[2]), f[4], PatternType.valueOf(f[3])),
                  new AccessControlEntry(
                      "User:" + f[1], "*", AclOperation.valueOf(f[5]), AclPermissionType.ALLOW)));
        } else {
          throw new IllegalArgumentException(
              path + " line " + number + ": cannot read '" + line + "'");
        }
      }
    }
  }

  static String password(String user, String given) {
    String variable =
        "BAZAAR_KAFKA_PASSWORD_" + user.toUpperCase(Locale.ROOT).replace('-', '_');
    String fromEnvironment = System.getenv(variable);
    if (fromEnvironment != null && !fromEnvironment.isEmpty()) {
      return fromEnvironment;
    }
    if (given.equals("-")) {
      throw new IllegalArgumentException(variable + " is not set: " + user + " needs a password");
    }
    return given;
  }
}
