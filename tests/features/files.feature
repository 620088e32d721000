Feature: Broken files are reported, never destroyed
  A typo in a JSON file or a damaged outbox stops hxlog with a message
  that says where the problem is; the file is left exactly as it was.

  Background:
    Given a heat exchanger with sensors T1 to T4 on the 1-Wire bus

  Scenario: malformed devicenames.json names line and column
    Given devicenames.json has a trailing comma on line 3
    When I take one sample
    Then it fails naming devicenames.json at line 3, column 1
    And devicenames.json is unchanged
    And no outbox was created

  Scenario Outline: malformed <file> names line and column
    Given <file> has a trailing comma on line 3
    When I ask for the status
    Then it fails naming <file> at line 3, column 1
    And <file> is unchanged

    Examples:
      | file         |
      | hxlog.json   |
      | secrets.json |

  Scenario: a garbage outbox is left alone
    Given garbage in the outbox
    When I take one sample
    Then it fails naming the outbox
    And the outbox is unchanged byte for byte
